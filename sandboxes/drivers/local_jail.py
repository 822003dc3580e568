"""What a local sandbox's bubblewrap jail sees: the bwrap argv, its generated /etc, its runtime.

The jail gets every namespace bwrap offers (user, pid, ipc, uts, mount, net, cgroup), no
capabilities, a new session, and a read-only root that holds only:

- ``/usr`` and the merged-usr links (``/bin``, ``/lib``, ``/lib64``, ``/sbin``);
- a few host ``/etc`` entries programs need (CA certificates, time zone, terminfo, the
  alternatives links, the loader cache) and a generated ``passwd``/``group``/``hosts``/
  ``nsswitch.conf``;
- the runner at ``/opt/lap/lib/sandboxes/runner`` with its libraries (``pyte``, ``wcwidth``,
  ``websockets``) beside it;
- the interpreter's install, bound read-only at its own path, when it lives outside ``/usr``,
  and ``/opt/lap/bin/python3`` (first on the harness ``PATH``) linking to it;
- the harness tools directory (``LAP_TOOLS_DIR``, filled by ``make harnesses``) at
  ``/opt/lap-tools``: the agent CLIs in ``node/node_modules/.bin`` (on ``PATH``), the Claude
  Agent SDK in ``python`` (``HARNESS_PYTHONPATH`` for API harnesses).

The vault's trust bundle (the platform root plus the system CAs) is bound read-only at
``/etc/lap/ca-bundle.pem``; the sidecar's key material never enters the jail.

Writable: ``/work`` and ``/tmp`` (the sandbox's own directories) and ``/run/lap`` (the runner
socket, the proxy socket, the recording). ``/proc`` is the jail's own; ``/dev`` is bwrap's
minimal set. Nothing else of the host — the state directory, the checkout, home directories,
other sandboxes, ``/run`` and its daemon sockets — exists inside.

The vault sidecar runs in a bwrap of its own (``sidecar_bwrap_argv``): the host network, a
read-only view of ``/usr``, ``/etc`` and its interpreter, a private ``/tmp``, and its state
directory as the only writable place; no capabilities, its own pid namespace.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .base import PROXY_ADDRESS, SANDBOX_ENV
from .base import TRUST_BUNDLE_PATH as JAIL_CA_BUNDLE

JAIL_LIB = "/opt/lap/lib"
SIDECAR_LIB = "/opt/lap/lib"
SIDECAR_SITE = "/opt/lap/site-packages"
JAIL_BIN = "/opt/lap/bin"
JAIL_TOOLS = "/opt/lap-tools"
TOOLS_BIN = f"{JAIL_TOOLS}/node/node_modules/.bin"
TOOLS_PYTHONPATH = f"{JAIL_TOOLS}/python"
JAIL_HOME = "/work"
JAIL_RUN = "/run/lap"
JAIL_TMP = "/tmp"  # noqa: S108 - the jail's own /tmp, a private bind
JAIL_SHM = "/dev/shm"  # noqa: S108 - the jail's own tmpfs
RUNNER_SOCKET = "runner.sock"
RUNNER_TOKEN_FILE = "runner-token"  # noqa: S105 - a file name; the runner reads and removes it
PROXY_SOCKET = "proxy.sock"
CA_BUNDLE = "ca-bundle.pem"  # in the sandbox's etc/
RUNNER_LIBRARIES = ("pyte", "wcwidth", "websockets")
SYSTEM_PYTHON = "/usr/bin/python3"
MERGED_USR = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
HOST_ETC = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "os-release",
    "profile",
    "ssl",
    "terminfo",
    "timezone",
)
SANDBOX_USER = "lap"
# Bind-mount SOURCE TARGET pairs (up to "--") in this private mount namespace, then exec "$@".
STAGE = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'


def sandbox_env(has_tools: bool) -> dict[str, str]:
    """The env every harness in the jail starts with: its layout, the proxy and the CA.

    ``HARNESS_PYTHONPATH`` (with the tools) is where API harnesses find the Agent SDK; it is
    not ``PYTHONPATH`` itself, so a shell's ``python3`` does not see the SDK's libraries.
    """
    path = f"{JAIL_BIN}:/usr/local/bin:/usr/bin:/bin"
    env = {
        "PATH": f"{TOOLS_BIN}:{path}" if has_tools else path,
        "HOME": JAIL_HOME,
        "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER,
        "LANG": "C.UTF-8",
        "TMPDIR": JAIL_TMP,
        **SANDBOX_ENV,
    }
    if has_tools:
        env["HARNESS_PYTHONPATH"] = TOOLS_PYTHONPATH
    return env


@dataclass(frozen=True)
class Runtime:
    """The interpreter that runs the runner, and the read-only binds it needs (host → jail)."""

    python: str
    binds: tuple[tuple[str, str], ...]

    def staged(self, stage: Path, hidden: list[str]) -> Runtime:
        """The same runtime with each bind source in ``hidden`` read from ``stage/<n>`` instead.

        The launcher bind-mounts those sources there in a private mount namespace, so bwrap,
        running as the sandbox uid, can reach a source whose host path it may not traverse.
        """
        binds = tuple(
            (str(stage / str(hidden.index(source))) if source in hidden else source, dest)
            for source, dest in self.binds
        )
        return Runtime(self.python, binds)

    def with_tools(self, tools: Path | None) -> Runtime:
        """The same runtime with the harness tools directory bound at ``/opt/lap-tools``."""
        if tools is None:
            return self
        return Runtime(self.python, (*self.binds, (str(tools), JAIL_TOOLS)))


def resolve_runtime(python: str | None) -> Runtime:
    """Find the interpreter, the runner package and its libraries on the host.

    ``python`` defaults to the platform's own interpreter (the one the runner is tested
    with; its libraries come from the same environment). An interpreter outside ``/usr``
    has its install prefix bound read-only at its own path (shared libpython, absolute
    RPATH); ``/usr/bin/python3`` needs no extra bind at all.
    """
    if python is None:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        python = os.path.join(sys.base_prefix, "bin", version)
    chosen = os.path.realpath(python)
    if not os.access(chosen, os.X_OK):
        raise FileNotFoundError(f"no executable python at {chosen}")
    binds: list[tuple[str, str]] = []
    if not chosen.startswith("/usr/"):
        prefix = subprocess.run(
            [chosen, "-I", "-c", "import sys; print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        binds.append((prefix, prefix))
    runner = Path(__file__).resolve().parent.parent / "runner"
    binds.append((str(runner), f"{JAIL_LIB}/sandboxes/runner"))
    for name in RUNNER_LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"the runner library {name} is not installed")
        binds.append((spec.submodule_search_locations[0], f"{JAIL_LIB}/{name}"))
    return Runtime(chosen, tuple(binds))


def resolve_sidecar_runtime(python: str) -> Runtime:
    """The interpreter that runs the sidecar, and what it needs bound read-only.

    ``python`` must have mitmproxy installed (the platform's own, by default). The sidecar
    runs on that environment's base interpreter (bound at its own path: shared libpython,
    absolute RPATH) with only two more binds, at fixed paths: the environment's
    site-packages and the ``sidecar`` package. Never the checkout or the venv as a whole,
    which may hold the platform's state directory and may sit below directories the proxy
    uid cannot traverse.
    """
    found = subprocess.run(
        [
            python,
            "-I",
            "-c",
            "import sys, importlib.util as u; print(sys.base_prefix); "
            "print(sys.version_info.major, sys.version_info.minor); "
            "print(u.find_spec('mitmproxy').submodule_search_locations[0]); "
            "print(u.find_spec('sidecar').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split("\n")
    base, version, mitmproxy_package, sidecar_package = found[:4]
    major, minor = version.split()
    binds = [] if base.startswith("/usr/") else [(base, base)]
    binds += [
        (os.path.dirname(mitmproxy_package), SIDECAR_SITE),
        (sidecar_package, f"{SIDECAR_LIB}/sidecar"),
    ]
    return Runtime(os.path.join(base, "bin", f"python{major}.{minor}"), tuple(binds))


def sidecar_command(runtime: Runtime, *args: str) -> tuple[list[str], dict[str, str]]:
    """The sidecar's command line and environment inside its bwrap."""
    env = {"PYTHONPATH": f"{SIDECAR_LIB}:{SIDECAR_SITE}", "LANG": "C.UTF-8"}
    return [runtime.python, "-s", "-B", "-m", "sidecar", *args], env


def merged_usr_binds() -> list[str]:
    """``/bin``, ``/lib``… as the host has them: symlinks into ``/usr`` or read-only dirs."""
    argv: list[str] = []
    for name in MERGED_USR:
        host = Path("/", name)
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    return argv


def staging_argv(sources: list[str], stage: Path) -> list[str]:
    """The launcher prefix that bind-mounts ``sources`` to ``stage/<n>`` (nothing if none).

    Run as root before dropping to a sandbox uid: the binds live in a private mount
    namespace, so the unprivileged ``bwrap`` after it can read sources whose host path that
    uid may not traverse (see ``Runtime.staged``).
    """
    if not sources:
        return []
    mounts = [arg for n, source in enumerate(sources) for arg in (source, str(stage / str(n)))]
    return [
        *("unshare", "--mount", "--propagation", "private", "--"),
        *("/bin/sh", "-c", STAGE, "lap-stage", *mounts, "--"),
    ]


def untraversable(path: str) -> str | None:
    """The first directory on ``path`` (itself included) another uid cannot enter, if any.

    Directories that do not exist yet do not count: the driver makes them (mode 0711).
    """
    directory = Path(path)
    for step in (*reversed(directory.parents), directory):
        try:
            mode = os.stat(step).st_mode
        except FileNotFoundError:
            return None
        if not mode & 0o001:
            return str(step)
    return None


def unreadable_by_others(path: str) -> str | None:
    """The first component of ``path`` another uid cannot traverse or read, if any."""
    blocked = untraversable(os.path.dirname(path))
    if blocked is not None:
        return blocked
    return None if os.stat(path).st_mode & 0o004 else path


def write_etc(directory: Path, uid: int, gid: int, hostname: str) -> None:
    """Write the jail's generated passwd, group, hosts and nsswitch.conf into ``directory``."""
    directory.mkdir(mode=0o755, exist_ok=True)
    files = {
        "passwd": (
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
            f"{SANDBOX_USER}:x:{uid}:{gid}:LAP sandbox:/work:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\n{SANDBOX_USER}:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)


def runner_command(runtime: Runtime) -> list[str]:
    """The jail's first process: the runner, on the socket and relay the driver expects."""
    return [
        runtime.python,
        "-s",
        "-B",
        "-m",
        "sandboxes.runner",
        "--listen",
        f"unix:{JAIL_RUN}/{RUNNER_SOCKET}",
        "--relay",
        f"{PROXY_ADDRESS}=unix:{JAIL_RUN}/{PROXY_SOCKET}",
        "--recording",
        f"{JAIL_RUN}/recording.cast",
        "--token-file",
        f"{JAIL_RUN}/{RUNNER_TOKEN_FILE}",
    ]


def runner_env(has_tools: bool) -> dict[str, str]:
    """The runner's whole environment; nothing of the platform's environment leaks in, and
    no token: the environment of the jail's processes stays readable in their /proc."""
    return {**sandbox_env(has_tools), "PYTHONPATH": JAIL_LIB}


def bwrap_argv(
    *,
    sandbox_dir: Path,
    runtime: Runtime,
    hostname: str,
    status_fd: int,
    seccomp_fd: int,
    command: list[str],
) -> list[str]:
    """The full ``bwrap`` command line for one sandbox running ``command``, under the
    seccomp filter read from ``seccomp_fd`` (``syscall_filter.program_fd``)."""
    argv = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--cap-drop",
        "ALL",
        "--new-session",
        "--die-with-parent",
        "--hostname",
        hostname,
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    argv += merged_usr_binds()
    for name in HOST_ETC:
        if os.path.exists(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts", "nsswitch.conf"):
        argv += ["--ro-bind", str(sandbox_dir / "etc" / name), f"/etc/{name}"]
    if (sandbox_dir / "etc" / CA_BUNDLE).exists():
        argv += ["--ro-bind", str(sandbox_dir / "etc" / CA_BUNDLE), JAIL_CA_BUNDLE]
    for source, dest in runtime.binds:
        argv += ["--ro-bind", source, dest]
    argv += ["--symlink", runtime.python, f"{JAIL_BIN}/python3"]
    argv += [
        "--bind",
        str(sandbox_dir / "work"),
        "/work",
        "--bind",
        str(sandbox_dir / "tmp"),
        JAIL_TMP,
        "--bind",
        str(sandbox_dir / "run"),
        JAIL_RUN,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        JAIL_SHM,
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        "/work",
        "--json-status-fd",
        str(status_fd),
        "--seccomp",
        str(seccomp_fd),
        "--",
        *command,
    ]
    return argv


def sidecar_bwrap_argv(
    *, runtime: Runtime, state_dir: Path, seccomp_fd: int, command: list[str]
) -> list[str]:
    """The ``bwrap`` command line for a sandbox's vault sidecar running ``command``, under
    the same seccomp filter as the jail (read from ``seccomp_fd``).

    The host network is shared (the sidecar is the jail's way out); everything else is
    private or read-only, and ``state_dir`` (key, CA, sockets) is the only writable path.
    """
    argv = [
        "bwrap",
        "--unshare-all",
        "--share-net",
        "--unshare-user",
        "--disable-userns",
        "--cap-drop",
        "ALL",
        "--new-session",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    argv += merged_usr_binds()
    # /tmp first: the runtime or the state dir may live below it.
    argv += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", JAIL_TMP]
    for source, dest in runtime.binds:
        argv += ["--ro-bind", source, dest]
    argv += [
        "--bind",
        str(state_dir),
        str(state_dir),
        "--remount-ro",
        "/",
        "--chdir",
        str(state_dir),
        "--seccomp",
        str(seccomp_fd),
        "--",
        *command,
    ]
    return argv
