"""The local driver against real bubblewrap and the real runner; isolation probed from inside."""

from __future__ import annotations

import base64
import errno
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pyseccomp
import pytest

from sandboxes.drivers import cgroups, local
from sandboxes.drivers.base import (
    LABEL_SANDBOX,
    DriverError,
    DriverUnavailable,
    EgressPolicy,
    Resources,
    SandboxSpec,
)
from sandboxes.drivers.local import LocalDriver
from sandboxes.runner_client import RunnerClient

from .conftest import push_egress
from .procs import UID_BASE, UID_RANGE, alive, sandbox_processes

pytestmark = pytest.mark.bwrap
READY_TIMEOUT = 10.0


def run(driver, handle, spec, script: str, timeout: float = 60) -> tuple[int | None, str, str]:
    """Run a Python script inside the sandbox through the runner's /exec."""
    out, err, code = [], [], None
    with RunnerClient(driver.endpoints(handle).runner_url, spec.runner_token) as client:
        for event in client.exec(["python3", "-c", textwrap.dedent(script)], timeout=timeout):
            if event.get("stream") == "stdout":
                out.append(event["data"])
            elif event.get("stream") == "stderr":
                err.append(event["data"])
            elif "exit_code" in event:
                code = event["exit_code"]
    return code, "".join(out), "".join(err)


@pytest.fixture
def ready(driver, make_sandbox):
    """``ready(**spec_fields) -> (handle, spec)`` with the runner answering."""

    def make(**fields):
        handle, spec = make_sandbox(**fields)
        driver.wait_ready(handle, READY_TIMEOUT)
        return handle, spec

    return make


def _pids_of(meta: dict) -> set[int]:
    pids = cgroups.pids(meta["cgroups"]) | {meta["jail_pid"], meta["proxy_pid"]}
    return {pid for pid in pids if alive(pid)}


def test_missing_bwrap_is_unavailable(driver, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DriverUnavailable, match="apt-get install bubblewrap"):
        driver.create(SandboxSpec("s1", "shell", "t"))


def test_a_state_directory_the_sandbox_users_cannot_enter_is_named(lap_home):
    """Below a 0700 directory (``/root/lap/.lap-state``), bwrap as the sandbox uid could not
    reach the sandbox's files: the create fails at once, saying which directory and what to do."""
    closed = lap_home / "closed"
    home = closed / "state"
    home.mkdir(parents=True)
    closed.chmod(0o700)
    driver = LocalDriver(home, uid_base=UID_BASE)
    if not driver.privileged:
        pytest.skip("runs as the platform's own user: no other uid needs to enter")
    with pytest.raises(DriverUnavailable, match=rf"{closed} is closed .*chmod o\+x {closed}"):
        driver.create(SandboxSpec(str(uuid.uuid4()), "shell", "t"))
    assert not (home / "sandboxes").exists()


def test_lifecycle_create_ready_list_destroy(driver, ready, lap_home):
    handle, spec = ready(labels={"lap.session/id": "sess-1"})
    assert driver.create(spec) == handle  # idempotent
    assert [p.name for p in (lap_home / "sandboxes").iterdir() if p.is_dir()] == [spec.sandbox_id]
    url = driver.endpoints(handle).runner_url
    assert url == f"unix://{lap_home}/sandboxes/{spec.sandbox_id}/run/runner.sock"
    assert RunnerClient(url, spec.runner_token).health()["ok"] is True

    (info,) = driver.list()
    assert info.handle == handle
    assert info.state == "running"
    assert info.labels == {LABEL_SANDBOX: spec.sandbox_id, "lap.session/id": "sess-1"}

    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    assert meta["uid"] in UID_RANGE
    pids = _pids_of(meta)
    assert len(pids) >= 3  # bwrap, its pid-namespace init, the runner (+ the proxy)
    started = time.monotonic()
    driver.destroy(handle)
    assert time.monotonic() - started < 2.0
    assert not [pid for pid in pids if alive(pid)]
    assert not Path(handle.ref).exists()
    assert not any(Path(group).exists() for group in meta["cgroups"].values())
    assert handle.ref not in Path("/proc/self/mountinfo").read_text()
    assert driver.list() == []
    driver.destroy(handle)  # idempotent


@pytest.fixture
def host_process():
    """A process on the host whose command line carries a unique marker."""
    marker = f"lap-host-{uuid.uuid4().hex}"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    yield marker
    process.kill()
    process.wait()


def test_sandbox_runs_unprivileged_in_its_own_namespaces(driver, ready, host_process):
    handle, spec = ready()
    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    code, out, err = run(
        driver,
        handle,
        spec,
        """
        import json, os, socket
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        print(json.dumps({
            "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "cap_eff": status["CapEff"].strip(), "hostname": socket.gethostname(),
            "cmdlines": [open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
                         for p in os.listdir("/proc") if p.isdigit()],
            "init": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode(),
            "cwd": os.getcwd(), "env": dict(os.environ),
            "net": [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]],
        }))
        """,
    )
    assert code == 0, err
    seen = json.loads(out)
    assert seen["uid"] == seen["gid"] == meta["uid"]
    assert seen["uid"] != 0
    assert seen["groups"] in ([], [meta["uid"]])
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["hostname"] == "lap-" + spec.sandbox_id.replace("-", "")[:8]
    assert seen["net"] == ["lo"]
    assert seen["cwd"] == "/work"
    assert "LAP_RUNNER_TOKEN" not in seen["env"]
    # Only the jail's own processes: bwrap's init, the runner, this command.
    assert seen["init"] == "bwrap"
    assert len(seen["cmdlines"]) <= 4
    assert not [line for line in seen["cmdlines"] if host_process in line]


def test_cannot_write_outside_its_own_directories(driver, ready):
    handle, spec = ready()
    code, out, err = run(
        driver,
        handle,
        spec,
        """
        import json, os
        writable = []
        for top in sorted(os.listdir("/")):
            if top in ("proc", "sys"):
                continue
            for root, dirs, files in os.walk("/" + top):
                try:
                    with open(os.path.join(root, ".lap-probe"), "w"):
                        pass
                    os.unlink(os.path.join(root, ".lap-probe"))
                    writable.append(root)
                    dirs.clear()
                except OSError:
                    pass
        print(json.dumps(writable))
        """,
        timeout=120,
    )
    assert code == 0, err
    # /run/lap holds the runner's own sockets; /dev/shm is a private tmpfs.
    assert set(json.loads(out)) == {"/work", "/tmp", "/run/lap", "/dev/shm"}


def test_cannot_see_state_dir_checkout_or_other_sandboxes(driver, ready, lap_home):
    marker = f"lap-marker-{uuid.uuid4().hex}"
    (lap_home / "keys.json").write_text(json.dumps({"LAP_MASTER_KEY": marker}))
    (lap_home / "lap.sqlite3").write_text(marker)
    (lap_home / marker).write_text(marker)
    other, _ = ready()
    (Path(other.ref) / "work" / marker).write_text(marker)
    handle, spec = ready()
    code, out, err = run(
        driver,
        handle,
        spec,
        f"""
        import json, os, subprocess
        from pathlib import Path
        names = {{"keys.json", "lap.sqlite3", "{marker}", "lapsite", ".lap-state", ".venv",
                  "docker.sock", ".s.PGSQL.5432", "redis.sock", "mysqld.sock"}}
        open("/work/own-{marker}", "w").write("{marker}")
        found = []
        for top in sorted(os.listdir("/")):
            if top in ("proc", "sys"):
                continue
            for root, dirs, files in os.walk("/" + top):
                found += [os.path.join(root, n) for n in set(files + dirs) & names]
        grep = subprocess.run(
            ["grep", "-r", "-l", "-s", "{marker}", "/etc", "/opt", "/run", "/tmp", "/work",
             "/dev/shm", "/root", "/home", "/var"],
            capture_output=True, text=True,
        )
        prefix = {sys.base_prefix!r}
        ancestors = {{str(p): sorted(os.listdir(p)) for p in Path(prefix).parents if str(p) != "/"}}
        print(json.dumps({{"found": found, "grep": grep.stdout.split(), "ancestors": ancestors,
                           "top": sorted(os.listdir("/"))}}))
        """,
        timeout=120,
    )
    assert code == 0, err
    seen = json.loads(out)
    # The only hit is the sandbox's own file: grep ran and saw nothing else.
    assert seen["found"] == []
    assert seen["grep"] == [f"/work/own-{marker}"]
    top = {"bin", "dev", "etc", "lib", "lib64", "opt", "proc", "run", "sbin", "tmp", "usr", "work"}
    # The runner's interpreter, when it lives outside /usr, and nothing beside it.
    prefix = Path(sys.base_prefix)
    if prefix.parts[1] != "usr":
        top.add(prefix.parts[1])
        for ancestor in prefix.parents[:-1]:
            child = prefix.relative_to(ancestor).parts[0]
            assert seen["ancestors"][str(ancestor)] == [child]
    assert seen["top"] == sorted(top)


@pytest.fixture
def host_server():
    """An HTTP server on the host's 127.0.0.1 that answers with a secret word."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello-from-the-host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # noqa: S104
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


PROBE_NETWORK = """
import json, socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
def via_proxy(request, head_only=False):
    with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
        s.sendall(request.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if head_only and b"\\r\\n\\r\\n" in data:
                break
    return data.decode(errors="replace")
def get(authority, path="/"):
    head = f"GET http://{{authority}}{{path}} HTTP/1.1\\r\\nHost: {{authority}}\\r\\n\\r\\n"
    return via_proxy(head)
targets = {targets!r}
print(json.dumps({{
    "direct": {{f"{{h}}:{{p}}": attempt(h, p) for h, p in targets}},
    "allowed": get("127.0.0.1:{port}"),
    "connect": via_proxy("CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n"
                         "GET / HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n"
                         "Connection: close\\r\\n\\r\\n"),
    "postgres": via_proxy("CONNECT 127.0.0.1:5432 HTTP/1.1\\r\\n\\r\\n", head_only=True),
    "private": via_proxy("CONNECT 10.1.2.3:443 HTTP/1.1\\r\\n\\r\\n", head_only=True),
    "metadata": get("169.254.169.254", "/latest"),
    "loopback": get("localhost:{port}"),
}}))
"""


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_network_only_through_the_vault_sidecar(driver, ready, host_server):
    handle, spec = ready(egress=EgressPolicy(allow_out=("127.0.0.1",), deny_out=("localhost",)))
    code, out, err = run(driver, handle, spec, PROBE_NETWORK.format(targets=[], port=host_server))
    assert code == 0, err
    before_bundle = json.loads(out)
    for name in ("allowed", "connect", "private", "metadata", "loopback"):
        assert before_bundle[name].startswith("HTTP/1.1 503"), (name, before_bundle[name])
        assert "vault_not_ready" in before_bundle[name]

    push_egress(driver, handle, spec)
    targets = [
        ("127.0.0.1", 5432),
        ("127.0.0.1", 6379),
        ("127.0.0.1", host_server),
        (_host_address(), host_server),
        ("1.1.1.1", 443),
        ("8.8.8.8", 53),
    ]
    code, out, err = run(
        driver, handle, spec, PROBE_NETWORK.format(targets=targets, port=host_server)
    )
    assert code == 0, err
    seen = json.loads(out)
    assert "connected" not in seen["direct"].values(), seen["direct"]
    assert seen["allowed"].split()[1] == "200"
    assert seen["allowed"].endswith("hello-from-the-host")
    assert seen["connect"].startswith("HTTP/1.1 200")
    assert seen["connect"].endswith("hello-from-the-host")
    for refused in ("private", "metadata", "loopback"):
        assert not seen[refused].startswith("HTTP/1.1 200"), (refused, seen[refused])
        assert "hello-from-the-host" not in seen[refused]


def test_default_policy_refuses_host_loopback(driver, ready, host_server):
    handle, spec = ready()
    push_egress(driver, handle, spec)
    code, out, err = run(driver, handle, spec, PROBE_NETWORK.format(targets=[], port=host_server))
    assert code == 0, err
    seen = json.loads(out)
    for name in ("allowed", "connect", "postgres", "private", "metadata", "loopback"):
        assert not seen[name].startswith("HTTP/1.1 200"), (name, seen[name])
        assert "hello-from-the-host" not in seen[name]


def _ask_sidecar(address: str, head: str) -> str:
    """Send ``head`` straight to the sidecar's loopback port, as any host process could."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while (chunk := sock.recv(65536)) and not data.endswith(b"hello-from-the-host"):
            data += chunk
            if data.startswith(b"HTTP/1.1 407") and b'"proxy_auth_required"}' in data:
                break
    return data.decode(errors="replace")


def test_sidecar_port_refuses_host_clients_without_the_relays_credential(
    driver, ready, host_server
):
    handle, spec = ready(egress=EgressPolicy(allow_out=("127.0.0.1",)))
    push_egress(driver, handle, spec)
    vault = Path(handle.ref) / "vault"
    address = (vault / "proxy.addr").read_text().strip()
    target = f"127.0.0.1:{host_server}"
    inner = f"GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"

    def requests(auth: str) -> tuple[str, str]:
        """A CONNECT with a request inside the tunnel, and a plain-HTTP request."""
        return (
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n{inner}",
            f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n{auth}\r\n",
        )

    for auth in ("", "Proxy-Authorization: Basic bGFwOndyb25n\r\n"):
        for head in requests(auth):
            answer = _ask_sidecar(address, head)
            assert answer.startswith("HTTP/1.1 407"), answer
            assert 'Proxy-Authenticate: Basic realm="lap-vault"' in answer
            assert "hello-from-the-host" not in answer
    # The relay's credential is what makes the difference: with it, the same requests pass.
    secret = (vault / "proxyauth.txt").read_text().strip()
    credential = base64.b64encode(f"lap:{secret}".encode()).decode()
    for head in requests(f"Proxy-Authorization: Basic {credential}\r\n"):
        assert _ask_sidecar(address, head).endswith("hello-from-the-host")
    # The sandbox's own traffic comes through the relay, which adds the credential.
    code, out, err = run(driver, handle, spec, PROBE_NETWORK.format(targets=[], port=host_server))
    assert code == 0, err
    seen = json.loads(out)
    for name in ("allowed", "connect"):
        assert seen[name].split()[1] == "200", seen[name]
        assert seen[name].endswith("hello-from-the-host")


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def _seccomp_mode(status: str) -> str:
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:"))


def test_the_jail_and_its_sidecar_run_under_the_seccomp_filter(driver, ready):
    handle, spec = ready()
    numbers = {
        name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        for name in ("keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup")
    }
    # Each denied call, with arguments that would otherwise get EINVAL/EFAULT or succeed.
    script = f"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
errors = {{}}
for name, number in {numbers!r}.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, 0, 0, 0, 0, 0)
    errors[name] = (result, ctypes.get_errno())
print(json.dumps({{"errors": errors, "status": open("/proc/self/status").read()}}))
"""
    code, out, err = run(driver, handle, spec, script)
    assert code == 0, err
    seen = json.loads(out)
    assert _seccomp_mode(seen["status"]) == "2"  # a filter is installed
    assert seen["errors"] == {name: [-1, errno.EPERM] for name in numbers}
    # The sidecar's python, not the bwrap processes whose command lines carry it.
    (sidecar,) = [
        proc
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit()
        and str(handle.ref).encode() in _cmdline(proc)
        and _cmdline(proc).split(b"\0")[3:5] == [b"-m", b"sidecar"]
    ]
    assert _seccomp_mode((sidecar / "status").read_text()) == "2"


def test_vault_files_stay_outside_the_jail(driver, ready):
    handle, spec = ready()
    vault = Path(handle.ref) / "vault"
    assert vault.stat().st_mode & 0o777 == 0o700
    for name in ("key.txt", "ca.pem", "proxyauth.txt"):
        assert (vault / name).stat().st_mode & 0o777 == 0o600
    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    assert vault.stat().st_uid == meta["proxy_uid"]
    assert driver.endpoints(handle).vault_url == f"unix://{vault}/ctl.sock"
    script = f"""
import os, json
print(json.dumps({{"bundle": open("/etc/lap/ca-bundle.pem").read().count("BEGIN CERTIFICATE"),
                  "run": sorted(os.listdir("/run/lap")),
                  "vault": os.path.exists({str(vault)!r})}}))
"""
    code, out, err = run(driver, handle, spec, script)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["bundle"] >= 1
    assert seen["run"] == ["proxy.sock", "runner.sock"]
    assert seen["vault"] is False


def test_memory_limit_kills_a_runaway_allocation(driver, ready):
    handle, spec = ready(resources=Resources(memory_mb=128, pids=64, cpus=1.0))
    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    code, _, _ = run(driver, handle, spec, "b = bytearray(2**30)\nprint(len(b))")
    oom = cgroups.oom_kills(meta["cgroups"])
    assert code in (137, -9) or oom > 0
    if meta["cgroups"]:
        assert oom > 0
    # The sandbox itself (and the host running this test) carry on.
    assert RunnerClient(driver.endpoints(handle).runner_url, spec.runner_token).health()["ok"]


def test_pids_limit_stops_a_fork_bomb(driver, ready):
    handle, spec = ready(resources=Resources(memory_mb=256, pids=32, cpus=1.0))
    code, out, err = run(
        driver,
        handle,
        spec,
        """
        import os, time
        children, error = [], None
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError as exc:
                error = type(exc).__name__
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        print(len(children), error)
        for pid in children:
            os.kill(pid, 9)
        """,
    )
    assert code == 0, err
    count, error = out.split()
    assert int(count) < 32
    assert error == "BlockingIOError"


def test_destroy_kills_every_process_within_two_seconds(driver, ready):
    handle, spec = ready()
    code, _, err = run(
        driver,
        handle,
        spec,
        """
        import subprocess
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        for _ in range(5):
            subprocess.Popen(["sleep", "1000"], start_new_session=True, **quiet)
        subprocess.Popen(["sh", "-c", "trap '' TERM HUP INT; sleep 1000"], **quiet)
        """,
    )
    assert code == 0, err
    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    pids = _pids_of(meta) | set(sandbox_processes())
    assert len(pids) >= 9
    started = time.monotonic()
    driver.destroy(handle)
    assert time.monotonic() - started < 2.0
    assert [pid for pid in pids if alive(pid)] == []
    assert sandbox_processes() == []


def test_sandbox_outlives_the_process_that_created_it(driver, lap_home):
    spec = SandboxSpec(str(uuid.uuid4()), "shell", uuid.uuid4().hex)
    creator = textwrap.dedent(
        f"""
        from pathlib import Path
        from sandboxes.drivers.base import SandboxSpec
        from sandboxes.drivers.local import LocalDriver
        driver = LocalDriver(Path({str(lap_home)!r}), uid_base={UID_BASE})
        driver.create(SandboxSpec({spec.sandbox_id!r}, "shell", {spec.runner_token!r}))
        """
    )
    done = subprocess.run([sys.executable, "-c", creator], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    handle = local.SandboxHandle(
        spec.sandbox_id, "local", str(lap_home / "sandboxes" / spec.sandbox_id)
    )
    try:
        driver.wait_ready(handle, READY_TIMEOUT)
        (info,) = driver.list()
        assert info.state == "running"
    finally:
        driver.destroy(handle)
    assert driver.list() == []


def test_sandbox_survives_a_launcher_that_exits_after_it_started(driver, make_sandbox, monkeypatch):
    """The launching shell may be scheduled late; its exit must not kill the jail or sidecar."""
    monkeypatch.setattr(local, "LAUNCH", local.LAUNCH.replace("& echo", "& sleep 0.5; echo"))
    handle, _ = make_sandbox()
    driver.wait_ready(handle, READY_TIMEOUT)
    (info,) = driver.list()
    assert info.state == "running"


def test_wait_ready_reports_a_jail_that_died(lap_home):
    broken = LocalDriver(lap_home, python="/usr/bin/false", uid_base=UID_BASE)
    handle = broken.create(SandboxSpec(str(uuid.uuid4()), "shell", "t"))
    try:
        with pytest.raises(DriverError, match="exited before its runner was ready"):
            broken.wait_ready(handle, READY_TIMEOUT)
        (info,) = broken.list()
        assert (info.state, info.reason) == ("exited", "exited")
    finally:
        broken.destroy(handle)


def test_list_reports_an_oom_killed_sandbox(driver, ready):
    handle, spec = ready(resources=Resources(memory_mb=96, pids=64, cpus=1.0))
    meta = json.loads((Path(handle.ref) / "meta.json").read_text())
    if not meta["cgroups"]:
        pytest.skip("cgroup v1 is not writable here: limits are rlimits, no OOM counter")
    run(driver, handle, spec, "b = bytearray(2**30)")
    assert driver.list()[0].state == "running"  # only the allocating process died
    os.kill(meta["jail_pid"], 9)  # the jail ends after an OOM kill
    deadline = time.monotonic() + 2
    while driver.list()[0].state == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    (info,) = driver.list()
    assert (info.state, info.reason) == ("exited", "OOMKilled")


def test_sandbox_env_points_at_the_relayed_proxy_and_the_vault_ca(lap_home):
    env = LocalDriver(lap_home).sandbox_env()
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == "localhost,127.0.0.1"
    assert env["NODE_USE_ENV_PROXY"] == "1"
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ):
        assert env[name] == "/etc/lap/ca-bundle.pem"


@pytest.fixture
def tools(lap_home):
    """A harness tools directory as ``make harnesses`` lays it out, with one CLI and one module."""
    tools = lap_home.parent / "tools"
    (tools / "node" / "node_modules" / ".bin").mkdir(parents=True)
    (tools / "python").mkdir()
    cli = tools / "node" / "node_modules" / ".bin" / "lap-fake-cli"
    cli.write_text("#!/bin/sh\necho fake cli ran as $(id -u)\n")
    cli.chmod(0o755)
    (tools / "python" / "lapfakesdk.py").write_text("VERSION = 'fake-sdk-1'\n")
    return tools


def test_tools_directory_is_bound_read_only_and_on_the_harness_path(lap_home, tools):
    driver = LocalDriver(lap_home, uid_base=UID_BASE, tools=tools)
    env = driver.sandbox_env()
    assert env["PATH"].split(":")[:2] == ["/opt/lap-tools/node/node_modules/.bin", "/opt/lap/bin"]
    assert env["HOME"] == "/work"
    spec = SandboxSpec(sandbox_id=str(uuid.uuid4()), harness="shell", runner_token="t" * 32)
    handle = driver.create(spec)
    try:
        driver.wait_ready(handle, READY_TIMEOUT)
        script = (
            "lap-fake-cli; "
            'PYTHONPATH=$HARNESS_PYTHONPATH python3 -c "import lapfakesdk, sys; '
            'print(lapfakesdk.VERSION, sys.version_info[:2])"; '
            "touch /opt/lap-tools/probe 2>&1 || echo read-only"
        )
        with RunnerClient(driver.endpoints(handle).runner_url, spec.runner_token) as client:
            events = list(client.exec(["sh", "-c", script], timeout=60, env=env))
    finally:
        driver.destroy(handle)
    out = "".join(e.get("data", "") for e in events)
    assert events[-1]["exit_code"] == 0, out
    assert "fake cli ran as" in out
    assert f"fake-sdk-1 {tuple(sys.version_info[:2])}" in out  # the platform's interpreter
    assert "read-only" in out
    assert not (tools / "probe").exists()


def test_without_a_tools_directory_nothing_is_bound(lap_home):
    driver = LocalDriver(lap_home, tools=lap_home / "missing")
    env = driver.sandbox_env()
    assert "/opt/lap-tools" not in env["PATH"]
    assert "HARNESS_PYTHONPATH" not in env
