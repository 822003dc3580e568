"""How the kubelet double runs one container: a launcher chain ending in ``bwrap``.

``/bin/sh`` (joins the container's cgroups, then ``exec``) → ``nsenter --net`` (the pod's
network namespace) → [``unshare --mount`` + bind staging, for image files a non-root uid
cannot traverse to, as the local driver does] → ``setpriv`` (the container's uid, gid and
the pod's fsGroup as supplementary group; parent-death signal; no_new_privs when
``allowPrivilegeEscalation`` is false) → ``bwrap`` (own user namespace for a non-root
container, own pid/ipc/uts namespaces, the pod's hostname, a root filesystem of ``/usr``, a
few host ``/etc`` entries, the pod's generated ``/etc`` files, the image's binds and the
volume mounts; read-only when ``readOnlyRootFilesystem``; root keeps only the capabilities
the container adds).

Not emulated: seccomp profiles (bwrap takes compiled filters only) and CPU accounting beyond
the cgroup quota.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandboxes.drivers import local_jail

from .images import Image

# Write our pid into each cgroup.procs file given first, then exec "$@".
JOIN = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n-1)); done; '
    'exec "$@"'
)
ETC_FILES = ("passwd", "group", "hosts", "nsswitch.conf")
HOST_ETC = (*local_jail.HOST_ETC, "protocols", "services")


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class Launch:
    """Everything about one container process the chain needs."""

    pause_pid: int
    hostname: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: tuple[str, ...]
    no_new_privs: bool
    read_only_root: bool
    working_dir: str
    image: Image
    mounts: tuple[Mount, ...]
    etc: Path  # the pod's generated passwd, group, hosts, nsswitch.conf
    stage: Path  # where unreadable image sources are staged
    cgroup_procs: tuple[str, ...]
    argv: tuple[str, ...]


def launch_argv(launch: Launch) -> list[str]:
    binds = list(launch.image.binds)
    stage: list[str] = []
    if launch.uid != 0:
        stage = [source for source, _ in binds if local_jail.unreadable_by_others(source)]
        binds = list(local_jail.Runtime("", tuple(binds)).staged(launch.stage, stage).binds)
        for index in range(len(stage)):
            (launch.stage / str(index)).mkdir(mode=0o755, parents=True, exist_ok=True)
    setpriv = ["setpriv", "--pdeathsig", "KILL"]
    if launch.uid != 0:
        groups = ",".join(str(g) for g in launch.groups)
        setpriv += [f"--reuid={launch.uid}", f"--regid={launch.gid}"]
        setpriv += [f"--groups={groups}"] if groups else ["--clear-groups"]
    if launch.no_new_privs:
        setpriv.append("--no-new-privs")
    return [
        *(
            "/bin/sh",
            "-c",
            JOIN,
            "kube-launch",
            str(len(launch.cgroup_procs)),
            *launch.cgroup_procs,
        ),
        *("nsenter", f"--net=/proc/{launch.pause_pid}/ns/net", "--"),
        *local_jail.staging_argv(stage, launch.stage),
        *setpriv,
        "--",
        *bwrap_argv(launch, binds),
    ]


def bwrap_argv(launch: Launch, binds: list[tuple[str, str]]) -> list[str]:
    argv = ["bwrap"]
    if launch.uid != 0:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--cap-drop", "ALL"]
    for capability in launch.capabilities if launch.uid == 0 else ():
        argv += ["--cap-add", f"CAP_{capability.removeprefix('CAP_')}"]
    argv += ["--new-session", "--die-with-parent", "--hostname", launch.hostname]
    argv += ["--ro-bind", "/usr", "/usr", *local_jail.merged_usr_binds()]
    for name in HOST_ETC:
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ETC_FILES:
        argv += ["--ro-bind", str(launch.etc / name), f"/etc/{name}"]
    for source, target in binds:
        argv += ["--ro-bind", source, target]
    for target, link in launch.image.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for mount in launch.mounts:
        argv += ["--ro-bind" if mount.read_only else "--bind", mount.source, mount.target]
    if launch.read_only_root:
        argv += ["--remount-ro", "/"]
    return [*argv, "--chdir", launch.working_dir, "--", *launch.argv]


def write_etc(directory: Path, hostname: str, users: dict[str, int]) -> None:
    """The pod's passwd, group, hosts and nsswitch.conf (one user and group per uid)."""
    directory.mkdir(mode=0o755, exist_ok=True)
    passwd = "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
    group = "root:x:0:\n"
    for name, uid in users.items():
        passwd += f"{name}:x:{uid}:{uid}:{name}:/nonexistent:/bin/sh\n"
        group += f"{name}:x:{uid}:\n"
    files = {
        "passwd": passwd + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": group + "nogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)
        (directory / name).chmod(0o644)
