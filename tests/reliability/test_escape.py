"""Escape attempts from inside a real session's sandbox, on the real platform: all fail.

What the local driver's own tests already prove for a bare sandboxes
(``tests/sandboxes/drivers/test_local.py``: namespaces, no capabilities, no writable or
visible host paths, no network but the vault, the vault's files outside the jail, the
sidecar's port refusing strangers) is not repeated. This module attacks from a session the
platform brought up, with a second session beside it, and looks for the platform's real
secrets: the master and signing keys, the sandbox's sealing key, the vault CA's private key,
the relay's proxy credential, the runner's token and the agent's secret value.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import textwrap

import pytest

from tests.e2e.test_exec_and_recording import run
from tests.reliability.local_sandboxes import alive, sandbox_of, wait_for

PROBE = textwrap.dedent(
    r"""
    import json, os, socket, sys
    config = json.loads(sys.argv[1])
    needles = [n.encode() for n in config["needles"]]
    seen = {}

    def attempt(host, port):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect((host, port))
                return "connected"
        except OSError as error:
            return type(error).__name__

    def via_vault(authority):
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", 3128), timeout=15) as sock:
            sock.sendall(head.encode())
            return sock.recv(4096).decode(errors="replace").split("\r\n")[0]

    seen["direct"] = {f"{h}:{p}": attempt(h, p) for h, p in config["direct"]}
    seen["via_vault"] = {a: via_vault(a) for a in config["via_vault"]}
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        seen["raw_socket"] = "opened"
    except OSError as error:
        seen["raw_socket"] = type(error).__name__

    signals = {}
    for pid in config["host_pids"]:
        try:
            os.kill(pid, 0)
            signals[pid] = "allowed"
        except OSError as error:
            signals[pid] = type(error).__name__
    seen["signals"] = signals

    found, memory = [], {}
    def scan(path, data):
        found.extend(f"{path}: needle {i}" for i, n in enumerate(needles) if n in data)
    for top in ("/etc", "/opt", "/run", "/tmp", "/work", "/dev/shm", "/root", "/home", "/var"):
        for root, dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as handle:
                        scan(path, handle.read(8 << 20))
                except OSError:
                    pass
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as handle:
                    scan(f"/proc/{pid}/{name}", handle.read())
            except OSError:
                pass
        try:  # the first readable, writable mapping (the heap or data): what ptrace would see
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
                for line in maps:
                    span, perms = line.split()[:2]
                    if perms.startswith("rw"):
                        start, end = (int(x, 16) for x in span.split("-"))
                        mem.seek(start)
                        scan(f"/proc/{pid}/mem", mem.read(min(end - start, 64 << 20)))
                        break
            memory[pid] = "read"
        except OSError as error:
            memory[pid] = type(error).__name__
    seen["found"], seen["memory"] = found, memory
    print(json.dumps(seen))
    """
)


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@pytest.fixture(scope="module")
def platform(start_platform):
    return start_platform()


def secret_material(platform, session_id: str, agent_secret: str) -> list[str]:
    """Every secret a sandbox must never see, as text to search for."""
    directory, meta = sandbox_of(platform, session_id)
    keys = json.loads((platform.home / "keys.json").read_text())
    ca_key = re.search(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.+?)\n",
        (directory / "vault" / "ca.pem").read_text(),
    )
    assert ca_key is not None
    return [
        keys["LAP_MASTER_KEY"],
        keys["DJANGO_SECRET_KEY"],
        keys["LAP_ENCRYPTION_KEYS"],
        (directory / "vault" / "key.txt").read_text().strip(),
        ca_key.group(1),
        (directory / "vault" / "proxyauth.txt").read_text().strip(),
        meta["runner_token"],
        agent_secret,
    ]


def test_nothing_leaves_or_leaks_from_a_sandbox(platform):
    value = "ghp_escape_" + secrets.token_hex(16)
    platform.create_agent(
        "escapee",
        env_vars={"GITHUB_TOKEN": value},
        env_var_hosts={"GITHUB_TOKEN": ["api.github.com"]},
    )
    attacker = platform.ready_session("escapee")
    neighbour = platform.ready_session("escapee")
    _, mine = sandbox_of(platform, attacker["id"])
    _, theirs = sandbox_of(platform, neighbour["id"])
    lan = host_address()
    config = {
        "needles": secret_material(platform, attacker["id"], value),
        "direct": [
            ("127.0.0.1", 5432),
            ("127.0.0.1", 6379),
            ("127.0.0.1", platform.port),
            ("::1", 5432),
            (lan, 5432),
            (lan, 6379),
            (lan, platform.port),
        ],
        "via_vault": [
            "127.0.0.1:5432",
            "127.0.0.1:6379",
            "localhost:6379",
            "[::1]:5432",
            "0.0.0.0:5432",
            "127.1:6379",
            "2130706433:5432",
            f"{lan}:5432",
            f"127.0.0.1:{platform.port}",
            "169.254.169.254:80",
        ],
        "host_pids": [
            theirs["jail_pid"],
            theirs["sidecar_pid"],
            mine["sidecar_pid"],
            mine["proxy_pid"],
            platform.process.pid,
        ],
    }
    status, events = run(
        platform,
        attacker["id"],
        {"argv": ["python3", "-c", PROBE, json.dumps(config)], "timeout": 120},
    )
    output = "".join(e.get("data", "") for e in events if e.get("stream") == "stdout")
    assert status == 200 and events[-1].get("exit_code") == 0, events[-3:]
    seen = json.loads(output)

    assert "connected" not in seen["direct"].values(), seen["direct"]
    for authority, answer in seen["via_vault"].items():
        assert answer.startswith("HTTP/1.1 403"), (authority, answer)
    assert seen["raw_socket"] == "PermissionError"
    assert set(seen["signals"].values()) == {"ProcessLookupError"}, seen["signals"]
    assert seen["found"] == [], seen["found"]
    # Every process it can see is its own (the jail's init, the runner, the harness, the
    # probe's shell); none of their memory holds a secret (the runner's is not even readable).
    assert len(seen["memory"]) <= 4, seen["memory"]


def test_killing_everything_it_can_reaches_only_its_own_sandbox(platform):
    platform.create_agent("kamikaze")
    attacker = platform.ready_session("kamikaze")
    neighbour = platform.ready_session("kamikaze")
    _, mine = sandbox_of(platform, attacker["id"])
    _, theirs = sandbox_of(platform, neighbour["id"])
    status, events = run(platform, attacker["id"], {"argv": ["sh", "-c", "kill -9 -1"]})
    assert status in (200, 503), events  # the runner itself is among the killed
    wait_for(lambda: not alive(mine["jail_pid"]), 10, "its jail to end")
    for pid in (theirs["jail_pid"], theirs["sidecar_pid"], theirs["proxy_pid"]):
        assert alive(pid), pid  # another uid and another pid namespace: out of reach
    assert platform.process.poll() is None
    status, events = run(platform, neighbour["id"], {"argv": ["echo", "unharmed"]})
    assert (status, events[0]) == (200, {"stream": "stdout", "data": "unharmed\n"})
    platform.run_task("sandboxes.tasks.sandbox_reconcile")
    ended = platform.api("GET", f"/sessions/{attacker['id']}").json()
    assert ended["status"] == "dead", ended
    wait_for(lambda: not alive(mine["sidecar_pid"]), 10, "its vault to follow its jail")
