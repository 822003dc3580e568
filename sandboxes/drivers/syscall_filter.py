"""The seccomp filter of local jails: the system calls a coding agent has no use for, refused.

Pods run under the container runtime's ``RuntimeDefault`` profile; a bwrap jail has no filter
unless it is given one (``bwrap --seccomp FD`` reads a compiled BPF program from a file
descriptor). This one allows everything but a deny-list modelled on what Docker's and
containerd's default profiles refuse an unprivileged container — kernel keyrings, BPF,
perf events, ``userfaultfd`` and ``io_uring`` (each a frequent way into kernel exploits),
module loading, kexec, clock and swap changes, mounts, namespaces, handle-based opens and
reading other processes' memory — each answered ``EPERM``, as if the call were not
permitted, so that programs that probe for a feature (libuv probes ``io_uring``) fall back.
Most of these would fail anyway without capabilities; the filter also closes the ones that
need none. A deny-list rather than an allow-list: the harnesses are large runtimes (Node,
Bun, Python, Rust) whose system calls change from release to release.
"""

from __future__ import annotations

import errno
import functools
import os

DENIED = (
    # Kernel keyrings, BPF, perf events, page-fault handling in user space, io_uring.
    "add_key",
    "keyctl",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # Kernel modules, kexec, reboot, swap, accounting, quotas, the clock.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "syslog",
    # Mounts and namespaces (the jail's are set up before the filter applies).
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "unshare",
    "setns",
    # Opening files by handle (bypasses path checks), other processes' memory, legacy calls.
    "open_by_handle_at",
    "name_to_handle_at",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "lookup_dcookie",
    "uselib",
    "ustat",
    "sysfs",
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
)


@functools.cache
def program() -> bytes:
    """The filter compiled to BPF for this machine's architecture (libseccomp does it)."""
    import pyseccomp as seccomp  # needs libseccomp.so.2: loaded only where jails run

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except OSError:  # not a system call on this architecture (vm86 off x86-32…)
            continue
    with open(os.memfd_create("lap-seccomp-build"), "w+b") as compiled:
        rules.export_bpf(compiled)  # libseccomp writes to the descriptor itself
        compiled.seek(0)
        return compiled.read()


def program_fd() -> int:
    """A fresh file descriptor holding ``program()`` from its start, for ``--seccomp FD``;
    the caller passes it to bwrap and closes it."""
    fd = os.memfd_create("lap-seccomp")
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
