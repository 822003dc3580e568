"""The local driver: every sandbox is a bubblewrap jail on this machine (see ``local_jail``).

State lives in ``<home>/sandboxes/<id>/`` (mode 0711, root's when the platform is root):

- ``meta.json`` (0600): labels, uid, pids with their start times, cgroups, runner token;
- ``work/``, ``tmp/``, ``run/`` (0700, the sandbox uid's): the jail's ``/work``, ``/tmp``
  and ``/run/lap`` (``runner.sock``, ``proxy.sock``, ``recording.cast``);
- ``etc/``: the generated passwd/group/hosts/nsswitch.conf and ``ca-bundle.pem`` (the
  vault's root plus the system CAs, the jail's ``/etc/lap/ca-bundle.pem``);
- ``vault/`` (0700, the proxy uid's, never bound into the jail): the sidecar's state dir —
  ``key.txt`` (sealing key) and ``ca.pem`` (intermediate key + chain) from
  ``spec.vault_material``, ``proxyauth.txt``, ``upstream-ca.pem`` (optional), and the
  sidecar's ``ctl.sock`` (the control endpoint, ``Endpoints.vault_url``) and ``proxy.addr``;
- ``jail.log``, ``proxy.log`` (relay), ``vault.log`` (sidecar), ``status.json`` (bwrap's
  ``--json-status-fd``).

Each sandbox runs three detached process trees, so they outlive the process that created them
(a django-q2 worker may be recycled) and leave it no zombies: ``sh`` starts them in the
background, prints the pid and exits.

- The jail: ``env --default-signal`` → [``unshare --mount`` + ``mount --bind``: only when
  the interpreter's path is not traversable by other uids, e.g. under ``/root``; the bind
  lives in a private mount namespace and vanishes with the jail] → ``prlimit`` →
  ``setpriv`` (root only: a distinct unprivileged uid per sandbox, no groups) → ``bwrap``
  → the runner. ``sh`` first moves itself into the sandbox's cgroups, so everything after
  it is limited from its first instruction.
- The vault sidecar (``python -m sidecar``, mitmproxy, on the platform's interpreter) under
  the sandbox's proxy uid, outside the jail in a bwrap of its own that shares only the host
  network: its proxy listens on an ephemeral 127.0.0.1 port, its control endpoint on
  ``vault/ctl.sock``. Beside it, the relay (``proxy_relay``, stdlib only, same uid) serves
  the socket the jail sees as ``/run/lap/proxy.sock`` and splices it to that port, adding the
  per-sandbox proxy credentials (see ``proxy_relay``) that the sidecar requires of every
  client (``--proxyauth-file vault/proxyauth.txt``). Both exit with the jail, and the
  agent cannot signal them or read their files (another uid and pid namespace).

Any process finds them again through ``meta.json``; start times guard against pid reuse.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..runner_client import RunnerClient, RunnerError
from . import cgroups, local_jail, syscall_filter
from .base import (
    LABEL_SANDBOX,
    DriverError,
    DriverUnavailable,
    Endpoints,
    SandboxHandle,
    SandboxInfo,
    SandboxSpec,
)

UID_BASE = 1_200_000
MAX_SLOTS = 50_000
DESTROY_BUDGET = 1.5
SOCKET_PATH_MAX = 107
VAULT_DIR = "vault"
VAULT_CONTROL = "ctl.sock"
VAULT_READY = "proxy.addr"
VAULT_AUTH = "proxyauth.txt"
VAULT_UPSTREAM_CA = "upstream-ca.pem"
VAULT_FILES = ("key.txt", "ca.pem")  # from spec.vault_material; the sidecar's alone
TRUST_BUNDLE = "ca-bundle.pem"  # from spec.vault_material; the jail's, read-only
SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BWRAP_MISSING = (
    "bubblewrap (bwrap) is not installed: apt-get install bubblewrap; see README → Requirements"
)
# Start "$@" detached (after joining the cgroups given first) and print its pid. The child
# holds until stdin (a pipe whose write end the driver keeps) reaches EOF: the driver closes
# it once this shell has exited, so bwrap's --die-with-parent binds the sandbox to a parent
# that stays (init), never to this shell — which, scheduled late, would kill it.
LAUNCH = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 1; shift; n=$((n - 1)); done; '
    'exec 3<&0; { read _ || :; exec "$@" </dev/null; } <&3 3<&- >&2 & echo $!'
)


class LocalDriver:
    """Sandboxes as bubblewrap jails on this machine, state under ``<home>/sandboxes``.

    ``home`` is the platform's state directory (``LAP_HOME``); the jails never see it.
    ``python`` is the interpreter that runs the runner; the default is the platform's own
    (its install prefix is bound read-only at its own path), ``"/usr/bin/python3"`` needs no
    bind at all (the runner must then support that version). When the platform
    runs as root, sandbox slot ``n`` runs as uid ``uid_base + 2n`` and its proxy (the vault
    sidecar and the relay) as ``uid_base + 2n + 1``; otherwise all run as the invoking user.
    ``sidecar_python`` runs the vault sidecar (it needs mitmproxy; default: the platform's
    own interpreter); ``upstream_ca`` is a PEM bundle the sidecars trust for upstreams besides
    the system CAs (tests: a trustme CA). A spec without ``vault_material`` gets no sidecar:
    its jail has no way out at all. ``tools`` is the harness tools directory (``make
    harnesses``), bound read-only into every jail when it exists.
    """

    name = "local"

    def __init__(
        self,
        home: Path,
        python: str | None = None,
        uid_base: int = UID_BASE,
        sidecar_python: str | None = None,
        upstream_ca: str | None = None,
        tools: str | Path | None = None,
    ) -> None:
        self.home = Path(home)
        self.root = self.home / "sandboxes"
        self.python = python
        self.uid_base = uid_base
        self.sidecar_python = sidecar_python or sys.executable
        self.upstream_ca = upstream_ca
        self.tools = Path(tools).resolve() if tools else None
        self.privileged = os.geteuid() == 0
        self._runtime: local_jail.Runtime | None = None
        self._sidecar_runtime: local_jail.Runtime | None = None

    def sandbox_env(self) -> dict[str, str]:
        """The jail's layout (PATH with the tools, HOME…), proxy and CA variables for the
        harness env (the runner's ``/start``)."""
        return local_jail.sandbox_env(self._tools() is not None)

    def _tools(self) -> Path | None:
        return self.tools if self.tools is not None and self.tools.is_dir() else None

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Start the jail, its vault sidecar and relay; idempotent on ``spec.sandbox_id``."""
        self._check_available()
        if not SANDBOX_ID.fullmatch(spec.sandbox_id):
            raise DriverError(f"invalid sandbox id {spec.sandbox_id!r}")
        runtime = self._resolve_runtime()
        directory = self.root / spec.sandbox_id
        handle = SandboxHandle(spec.sandbox_id, self.name, str(directory))
        for socket_path in (
            directory / "run" / local_jail.RUNNER_SOCKET,
            directory / VAULT_DIR / VAULT_CONTROL,
        ):
            if len(str(socket_path)) > SOCKET_PATH_MAX:
                raise DriverError(f"socket path too long for AF_UNIX: {socket_path}")
        with self._locked():
            meta = _read_json(directory / "meta.json")
            if meta is not None and meta["jail_pid"]:
                return handle
            if directory.exists():
                self._teardown(directory, time.monotonic() + DESTROY_BUDGET)
            slot = self._free_slot()
            try:
                meta = self._start(spec, directory, slot, runtime)
            except BaseException as exc:
                self._teardown(directory, time.monotonic() + DESTROY_BUDGET)
                if isinstance(exc, DriverError):
                    raise
                if isinstance(exc, OSError | subprocess.SubprocessError):
                    raise DriverError(f"cannot start sandbox: {exc}", retryable=True) from exc
                raise
            _write_json(directory / "meta.json", meta)
        return handle

    def wait_ready(self, handle: SandboxHandle, timeout: float) -> None:
        """Poll until the runner's ``/healthz`` answers and the vault sidecar listens.

        DriverError if the jail or the sidecar died, or when ``timeout`` passes.
        """
        directory = self._directory(handle)
        meta = _read_json(directory / "meta.json")
        if meta is None:
            raise DriverError(f"sandbox {handle.sandbox_id} does not exist")
        deadline = time.monotonic() + timeout
        delay = 0.005
        with RunnerClient(self.endpoints(handle).runner_url, meta["runner_token"]) as client:
            while True:
                with contextlib.suppress(RunnerError):
                    if client.health().get("ok") and self._vault_ready(directory, meta):
                        return
                if not _alive(meta["jail_pid"], meta["jail_start"]):
                    raise DriverError(
                        f"sandbox {handle.sandbox_id} exited before its runner was ready: "
                        + _tail(directory / "jail.log")
                    )
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"sandbox {handle.sandbox_id}: runner not ready after {timeout:g}s: "
                        + _tail(directory / "jail.log"),
                        retryable=True,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def endpoints(self, handle: SandboxHandle) -> Endpoints:
        """The runner's unix socket and the vault sidecar's control socket."""
        directory = self._directory(handle)
        return Endpoints(
            runner_url=f"unix://{directory / 'run' / local_jail.RUNNER_SOCKET}",
            vault_url=f"unix://{directory / VAULT_DIR / VAULT_CONTROL}",
        )

    @staticmethod
    def _vault_ready(directory: Path, meta: dict[str, Any]) -> bool:
        """Whether the sidecar (if the sandbox has one) listens; DriverError if it died."""
        if not meta.get("sidecar_pid"):
            return True
        if (directory / VAULT_DIR / VAULT_READY).exists():
            return True
        if not _alive(meta["sidecar_pid"], meta["sidecar_start"]):
            raise DriverError(
                "the vault sidecar exited before it was ready: " + _tail(directory / "vault.log")
            )
        return False

    def destroy(self, handle: SandboxHandle) -> None:
        """Kill every process of the sandbox, remove its cgroups and directory; idempotent."""
        directory = self._directory(handle)
        deadline = time.monotonic() + DESTROY_BUDGET
        with self._locked():
            if directory.exists() and not self._teardown(directory, deadline):
                raise DriverError(
                    f"sandbox {handle.sandbox_id}: processes survived SIGKILL", retryable=True
                )

    def vault_restart(self, handle: SandboxHandle) -> bool:
        """Start the sandbox's vault sidecar again if it is not running; whether it did.

        It comes back with the same key material and an empty policy (the platform pushes
        the bundle again); the relay finds its new port through the new ready file.
        DriverError if the sandbox is gone or its jail has exited.
        """
        directory = self._directory(handle)
        with self._locked():
            meta = _read_json(directory / "meta.json")
            if meta is None or not _alive(meta["jail_pid"], meta["jail_start"]):
                raise DriverError(f"sandbox {handle.sandbox_id} is not running")
            if not meta["sidecar_pid"] or _alive(meta["sidecar_pid"], meta["sidecar_start"]):
                return False
            (directory / VAULT_DIR / VAULT_READY).unlink(missing_ok=True)
            pid = self._spawn_sidecar(handle.sandbox_id, directory, meta["proxy_uid"])
            meta.update(sidecar_pid=pid, sidecar_start=_start_time(pid))
            _write_json(directory / "meta.json", meta)
        return True

    def list(self) -> list[SandboxInfo]:
        """Every sandbox directory: labels, running/exited, and why it exited."""
        infos: list[SandboxInfo] = []
        if not self.root.is_dir():
            return infos
        with self._locked():
            for directory in sorted(self.root.iterdir()):
                if not directory.is_dir() or not SANDBOX_ID.fullmatch(directory.name):
                    continue
                handle = SandboxHandle(directory.name, self.name, str(directory))
                meta = _read_json(directory / "meta.json")
                if meta is None or not meta["jail_pid"]:
                    labels = {LABEL_SANDBOX: directory.name}
                    infos.append(SandboxInfo(handle, labels, "exited", "incomplete"))
                    continue
                if _alive(meta["jail_pid"], meta["jail_start"]):
                    state, reason = "running", ""
                elif cgroups.oom_kills(meta["cgroups"]) > 0:
                    state, reason = "exited", "OOMKilled"
                else:
                    state, reason = "exited", "exited"
                infos.append(SandboxInfo(handle, meta["labels"], state, reason))
        return infos

    def _check_available(self) -> None:
        if shutil.which("bwrap") is None:
            raise DriverUnavailable(BWRAP_MISSING)
        for tool in ("setpriv", "prlimit", "unshare") if self.privileged else ("prlimit",):
            if shutil.which(tool) is None:
                raise DriverUnavailable(f"{tool} is not installed: apt-get install util-linux")
        blocked = local_jail.untraversable(str(self.home)) if self.privileged else None
        if blocked is not None:
            raise DriverUnavailable(
                f"the sandboxes' users cannot enter {self.home}: {blocked} is closed to other"
                f" users (mode {os.stat(blocked).st_mode & 0o777:o}); run `chmod o+x {blocked}`"
                " or set LAP_HOME to a directory outside it"
            )

    def _resolve_sidecar_runtime(self) -> local_jail.Runtime:
        if self._sidecar_runtime is None:
            self._sidecar_runtime = _runtime_or_unavailable(
                "vault", local_jail.resolve_sidecar_runtime, self.sidecar_python
            )
        return self._sidecar_runtime

    def _resolve_runtime(self) -> local_jail.Runtime:
        if self._runtime is None:
            self._runtime = _runtime_or_unavailable(
                "runner", local_jail.resolve_runtime, self.python
            )
        return self._runtime

    def _directory(self, handle: SandboxHandle) -> Path:
        if not SANDBOX_ID.fullmatch(handle.sandbox_id):
            raise DriverError(f"invalid sandbox id {handle.sandbox_id!r}")
        return self.root / handle.sandbox_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _free_slot(self) -> int:
        used = set()
        for meta_file in self.root.glob("*/meta.json"):
            meta = _read_json(meta_file)
            if meta is not None:
                used.add(meta["slot"])
        for slot in range(MAX_SLOTS):
            if slot not in used:
                return slot
        raise DriverError("no free sandbox uid", retryable=True)

    def _uids(self, slot: int) -> tuple[int, int]:
        if not self.privileged:
            return os.getuid(), os.getuid()
        return self.uid_base + 2 * slot, self.uid_base + 2 * slot + 1

    def _start(
        self, spec: SandboxSpec, directory: Path, slot: int, runtime: local_jail.Runtime
    ) -> dict[str, Any]:
        uid, proxy_uid = self._uids(slot)
        hostname = "lap-" + re.sub(r"[^a-z0-9]", "", spec.sandbox_id.lower())[:8]
        directory.mkdir(mode=0o711)
        for name in ("work", "tmp", "run"):
            (directory / name).mkdir(mode=0o700)
            os.chown(directory / name, uid, uid)
        token_file = directory / "run" / local_jail.RUNNER_TOKEN_FILE
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(spec.runner_token)
        os.chown(token_file, uid, uid)
        local_jail.write_etc(directory / "etc", uid, uid, hostname)
        tools = self._tools()
        runtime = runtime.with_tools(tools)
        stage: list[str] = []
        if self.privileged:
            stage = [s for s, _ in runtime.binds if local_jail.unreadable_by_others(s)]
            for index in range(len(stage)):
                (directory / "stage" / str(index)).mkdir(mode=0o755, parents=True)
            runtime = runtime.staged(directory / "stage", stage)
        groups = cgroups.create(spec.sandbox_id, spec.resources)
        meta: dict[str, Any] = {
            "sandbox_id": spec.sandbox_id,
            "labels": {LABEL_SANDBOX: spec.sandbox_id, **spec.labels},
            "slot": slot,
            "uid": uid,
            "proxy_uid": proxy_uid,
            "runner_token": spec.runner_token,
            "cgroups": groups,
            "jail_pid": 0,
            "jail_start": 0,
            "proxy_pid": 0,
            "proxy_start": 0,
            "sidecar_pid": 0,
            "sidecar_start": 0,
        }
        # Written now, so a failure below leaves cgroups that teardown can find.
        _write_json(directory / "meta.json", meta)
        has_vault = all(name in spec.vault_material for name in VAULT_FILES)
        if has_vault:
            self._write_vault(spec, directory, proxy_uid)
            sidecar_pid = self._spawn_sidecar(spec.sandbox_id, directory, proxy_uid)
            meta.update(sidecar_pid=sidecar_pid, sidecar_start=_start_time(sidecar_pid))
            _write_json(directory / "meta.json", meta)
        limits = [f"--nproc={spec.resources.pids}"] if self.privileged else []
        if not groups:
            limits.append(f"--as={spec.resources.memory_mb * 1024 * 1024}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if has_vault:
                proxy_socket = directory / "run" / local_jail.PROXY_SOCKET
                listener.bind(str(proxy_socket))
                os.chown(proxy_socket, uid, uid)
                os.chmod(proxy_socket, 0o600)
                listener.listen(128)
            with (
                open(_private(directory / "status.json"), "wb") as status,
                open(syscall_filter.program_fd(), "rb") as seccomp,
            ):
                argv = local_jail.bwrap_argv(
                    sandbox_dir=directory,
                    runtime=runtime,
                    hostname=hostname,
                    status_fd=status.fileno(),
                    seccomp_fd=seccomp.fileno(),
                    command=local_jail.runner_command(runtime),
                )
                jail_pid = _spawn(
                    [
                        *local_jail.staging_argv(stage, directory / "stage"),
                        *("prlimit", *limits, "--"),
                        *self._as_uid(uid),
                        *argv,
                    ],
                    env=local_jail.runner_env(tools is not None),
                    log=directory / "jail.log",
                    cgroup_procs=[f"{group}/cgroup.procs" for group in groups.values()],
                    pass_fds=(status.fileno(), seccomp.fileno()),
                )
            meta.update(jail_pid=jail_pid, jail_start=_start_time(jail_pid))
            if has_vault:
                sidecar = f"{meta['sidecar_pid']}:{meta['sidecar_start']}"
                proxy_pid = self._spawn_relay(directory, proxy_uid, listener, jail_pid, sidecar)
                meta.update(proxy_pid=proxy_pid, proxy_start=_start_time(proxy_pid))
        finally:
            listener.close()
        return meta

    def _write_vault(self, spec: SandboxSpec, directory: Path, uid: int) -> None:
        """The sidecar's state dir (its uid's alone) and the jail's trust bundle."""
        vault = directory / VAULT_DIR
        vault.mkdir(mode=0o700)
        os.chown(vault, uid, uid)
        files = {name: spec.vault_material[name] for name in VAULT_FILES}
        files[VAULT_AUTH] = secrets.token_urlsafe(32).encode()
        if self.upstream_ca:
            files[VAULT_UPSTREAM_CA] = Path(self.upstream_ca).read_bytes()
        for name, data in files.items():
            path = vault / name
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(data)
            os.chown(path, uid, uid)
        if TRUST_BUNDLE in spec.vault_material:
            bundle = directory / "etc" / local_jail.CA_BUNDLE
            bundle.write_bytes(spec.vault_material[TRUST_BUNDLE])
            bundle.chmod(0o644)

    def _spawn_sidecar(self, sandbox_id: str, directory: Path, uid: int) -> int:
        runtime = self._resolve_sidecar_runtime()
        stage: list[str] = []
        if self.privileged:
            stage = [s for s, _ in runtime.binds if local_jail.unreadable_by_others(s)]
            for index in range(len(stage)):
                (directory / "vault-stage" / str(index)).mkdir(
                    mode=0o755, parents=True, exist_ok=True
                )
            runtime = runtime.staged(directory / "vault-stage", stage)
        vault = directory / VAULT_DIR
        args = [
            *("--proxy", "127.0.0.1:0"),
            *("--control", f"unix:{vault / VAULT_CONTROL}"),
            *("--state-dir", str(vault)),
            *("--ready-file", str(vault / VAULT_READY)),
            *("--sandbox-id", sandbox_id),
            *("--proxyauth-file", str(vault / VAULT_AUTH)),
        ]
        if self.upstream_ca:
            args += ["--upstream-ca", str(vault / VAULT_UPSTREAM_CA)]
        command, command_env = local_jail.sidecar_command(runtime, *args)
        with open(syscall_filter.program_fd(), "rb") as seccomp:
            argv = local_jail.sidecar_bwrap_argv(
                runtime=runtime, state_dir=vault, seccomp_fd=seccomp.fileno(), command=command
            )
            return _spawn(
                [
                    *local_jail.staging_argv(stage, directory / "vault-stage"),
                    *self._as_uid(uid),
                    *argv,
                ],
                env={"PATH": "/usr/bin:/bin", "HOME": str(vault), **command_env},
                log=directory / "vault.log",
                cgroup_procs=[],
                pass_fds=(seccomp.fileno(),),
            )

    def _spawn_relay(
        self, directory: Path, uid: int, listener: socket.socket, jail_pid: int, sidecar: str
    ) -> int:
        python = local_jail.SYSTEM_PYTHON
        if not os.access(python, os.X_OK):
            python = self._resolve_runtime().python
        vault = directory / VAULT_DIR
        # The proxy uid may not be able to read the checkout: hand it the script as an fd.
        with open(Path(__file__).with_name("proxy_relay.py"), "rb") as script:
            argv = [
                *self._as_uid(uid),
                python,
                "-I",
                f"/proc/self/fd/{script.fileno()}",
                f"--fd={listener.fileno()}",
                f"--ready-file={vault / VAULT_READY}",
                f"--auth-file={vault / VAULT_AUTH}",
                f"--watch-pid={jail_pid}",
                f"--stop-pid={sidecar}",
            ]
            return _spawn(
                argv,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                log=directory / "proxy.log",
                cgroup_procs=[],
                pass_fds=(script.fileno(), listener.fileno()),
            )

    def _as_uid(self, uid: int) -> builtins.list[str]:  # ``list`` is a method here
        if not self.privileged:
            return []
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]

    def _teardown(self, directory: Path, deadline: float) -> bool:
        """Kill, un-cgroup and remove one sandbox directory; False if processes survived."""
        meta = _read_json(directory / "meta.json") or {}
        groups: dict[str, str] = meta.get("cgroups", {})
        jail = (meta.get("jail_pid", 0), meta.get("jail_start", 0))
        pids = [
            jail,
            (meta.get("proxy_pid", 0), meta.get("proxy_start", 0)),
            (meta.get("sidecar_pid", 0), meta.get("sidecar_start", 0)),
        ]
        if _alive(*jail):
            init = _jail_init_pid(directory)
            pids.append((init, _start_time(init) if _parent(init) == jail[0] else 0))
        for pid, start in pids:
            if pid and start and _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        gone = cgroups.kill(groups, deadline)
        while any(pid and start and _alive(pid, start) for pid, start in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        if not gone:
            return False
        cgroups.remove(groups)
        shutil.rmtree(directory, onexc=_force_remove)
        return True


def _spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    log: Path,
    cgroup_procs: list[str],
    pass_fds: tuple[int, ...],
) -> int:
    """Start ``argv`` detached from this process (reparented, never our zombie); its pid."""
    hold, release = os.pipe()
    try:
        with open(_private(log), "ab") as err:
            done = subprocess.run(
                [
                    *("/bin/sh", "-c", LAUNCH, "lap-launch", str(len(cgroup_procs))),
                    *cgroup_procs,
                    *("env", "--default-signal", "--", *argv),
                ],
                env=env,
                stdin=hold,
                stdout=subprocess.PIPE,
                stderr=err,
                pass_fds=pass_fds,
                start_new_session=True,
                check=False,
                timeout=10,
            )
    finally:
        os.close(hold)
        os.close(release)
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise DriverError(f"cannot start {argv[0]}: {_tail(log)}", retryable=True)
    return int(done.stdout)


def _private(path: Path) -> Path:
    path.touch(mode=0o600)
    return path


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``start`` is known, is the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (not start or int(fields[19]) == start)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _jail_init_pid(directory: Path) -> int:
    """The host pid of the jail's pid-namespace init, from bwrap's status file."""
    try:
        lines = (directory / "status.json").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        with contextlib.suppress(ValueError):
            pid = json.loads(line).get("child-pid")
            if pid:
                return int(pid)
    return 0


def _force_remove(function: Any, path: str, exc: BaseException) -> None:
    """rmtree helper: a sandbox may have made its files unwritable; make them writable."""
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    return data.decode("utf-8", "replace").strip() or "(empty log)"


def _runtime_or_unavailable(
    what: str, resolve: Callable[[Any], local_jail.Runtime], python: Any
) -> local_jail.Runtime:
    try:
        return resolve(python)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DriverUnavailable(f"the local driver cannot run the {what}: {exc}") from exc
