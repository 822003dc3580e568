"""Issue 5, end to end: a real platform, real bwrap sandboxes, the real vault sidecar.

The upstream is a local HTTPS echo server with a trustme certificate; the platform's sidecars
trust its CA through ``LAP_VAULT_UPSTREAM_CA``. Commands run inside the sandbox through
``POST /sessions/{id}/exec`` with the harness's (stub) environment.
"""

from __future__ import annotations

import http.server
import json
import re
import secrets
import ssl
import threading
import time

import pytest
import trustme

from sandboxes.drivers.local_jail import TOOLS_PYTHONPATH
from tests.e2e.test_exec_and_recording import run
from tests.harness_tools import require_cli
from tests.live import LivePlatform
from tests.vault.sidecar_support import Upstream

STUB = re.compile(r"lap_stub_GITHUB_TOKEN_[0-9a-f]{32}")
# The jail's NO_PROXY lists localhost (for the sandbox's own services); these commands reach
# the host's loopback, which only the vault can do.
VIA_VAULT = "unset NO_PROXY no_proxy; "


class EchoServer:
    """HTTPS on 127.0.0.1 that answers with what it received and remembers it."""

    def __init__(self, ca: trustme.CA) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen = {"path": self.path, "headers": dict(self.headers)}
                received.append(seen)
                body = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def authorizations(self) -> list[str]:
        return [r["headers"].get("Authorization", "") for r in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream_ca(tmp_path_factory):
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("upstream") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="module")
def echo(upstream_ca):
    server = EchoServer(upstream_ca[0])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream(upstream_ca):
    """Echo plus a git smart-HTTP repository behind Basic auth (``tests.vault``'s server)."""
    server = Upstream(upstream_ca[0]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform(upstream_ca):
    live = LivePlatform()
    live.env["LAP_VAULT_UPSTREAM_CA"] = str(upstream_ca[1])
    live.start()
    yield live
    live.stop()


def in_sandbox(platform, session_id: str, argv: list[str]) -> tuple[str, int | None]:
    """``argv`` run in the sandbox through the exec API: its output and exit code."""
    status, events = run(platform, session_id, {"argv": argv, "timeout": 30})
    assert status == 200, events
    return "".join(e.get("data", "") for e in events), events[-1].get("exit_code")


def sh(platform, session_id: str, script: str) -> tuple[str, int | None]:
    return in_sandbox(platform, session_id, ["sh", "-c", script])


def make_agent(platform, name: str, value: str, **fields) -> dict:
    return platform.create_agent(
        name,
        env_vars={"GITHUB_TOKEN": value},
        env_var_hosts={"GITHUB_TOKEN": ["localhost"]},
        allow_out=["localhost", "127.0.0.1"],
        **fields,
    )


def via_vault(platform, session_id: str, argv: list[str]) -> tuple[str, int | None]:
    """``argv`` in the sandbox with ``NO_PROXY`` unset (see ``VIA_VAULT``); output and exit."""
    return in_sandbox(platform, session_id, ["env", "-u", "NO_PROXY", "-u", "no_proxy", *argv])


def curl(port: int, host: str = "localhost") -> str:
    return (
        VIA_VAULT + 'curl -sS -m 20 -H "Authorization: Bearer $GITHUB_TOKEN" '
        f"https://{host}:{port}/echo"
    )


def test_stub_in_the_sandbox_real_value_at_the_upstream_blocked_elsewhere_and_rotated(
    platform, echo
):
    secret = "ghp_e2e_" + secrets.token_hex(16)
    rotated = "ghp_e2e_rotated_" + secrets.token_hex(16)
    make_agent(platform, "vault-e2e", secret)
    session = platform.ready_session("vault-e2e")
    sid = session["id"]
    bodies: list[str] = [json.dumps(session)]

    out, code = sh(platform, sid, "echo $GITHUB_TOKEN")
    assert code == 0 and STUB.fullmatch(out.strip()), out
    stub = out.strip()

    keys = platform.api("GET", f"/sessions/{sid}/vault-keys")
    assert keys.status_code == 200
    bodies.append(keys.text)
    assert keys.json() == [
        {"name": "GITHUB_TOKEN", "stub": stub, "source": "agent", "allowed_hosts": ["localhost"]}
    ]

    # curl: the upstream gets the real value; the echo comes back scrubbed to the stub.
    out, code = sh(platform, sid, curl(echo.port))
    assert code == 0, out
    assert echo.authorizations()[-1] == f"Bearer {secret}"
    assert json.loads(out)["headers"]["Authorization"] == f"Bearer {stub}"

    # Python inside the jail (urllib, the env's proxy and CA bundle) too.
    script = (
        "import os, urllib.request as u; "
        f"r = u.Request('https://localhost:{echo.port}/py', "
        "headers={'Authorization': 'token ' + os.environ['GITHUB_TOKEN']}); "
        "print(u.urlopen(r, timeout=20).status)"
    )
    out, code = sh(platform, sid, VIA_VAULT + f'python3 -c "{script}"')
    assert (code, out.strip()) == (0, "200"), out
    assert echo.authorizations()[-1] == f"token {secret}"

    # A stub headed for a host it is not allowed for: 403, never forwarded.
    before = len(echo.received)
    out, code = sh(platform, sid, curl(echo.port, host="127.0.0.1"))
    assert json.loads(out) == {
        "error": "vault_blocked",
        "reason": "credential_not_allowed_for_host",
        "credential": "GITHUB_TOKEN",
    }
    assert len(echo.received) == before

    records = platform.api("GET", f"/sessions/{sid}/interceptions", params={"limit": 50})
    assert records.status_code == 200
    bodies.append(records.text)
    page = records.json()
    assert page["total"] == len(page["data"]) >= 3
    blocked = [r for r in page["data"] if r["decision"] == "blocked"]
    assert [(r["host"], r["reason"], r["credentials"]) for r in blocked] == [
        ("127.0.0.1", "credential_not_allowed_for_host", ["GITHUB_TOKEN"])
    ]
    allowed = [r for r in page["data"] if r["decision"] == "allowed"]
    assert {r["path"] for r in allowed} >= {"/echo", "/py"}

    events = platform.api("GET", f"/sessions/{sid}/security-events")
    bodies.append(events.text)
    assert [(e["kind"], e["host"]) for e in events.json()] == [("vault_blocked", "127.0.0.1")]
    metrics = platform.client.get("/metrics").text
    assert re.search(r"^lap_vault_blocked_total 1\.0$", metrics, re.M), metrics

    # Rotation: the next request carries the new value; the sandbox keeps running, same stub.
    reply = platform.api("PATCH", "/agents/vault-e2e", json={"env_vars": {"GITHUB_TOKEN": rotated}})
    assert reply.status_code == 200
    bodies.append(reply.text)
    deadline = time.monotonic() + 20
    while True:
        out, code = sh(platform, sid, curl(echo.port))
        if echo.authorizations()[-1] == f"Bearer {rotated}":
            break
        assert time.monotonic() < deadline, "rotation never reached the sidecar"
        time.sleep(0.2)
    out, _ = sh(platform, sid, "echo $GITHUB_TOKEN")
    assert out.strip() == stub
    assert platform.api("GET", f"/sessions/{sid}").json()["status"] == "ready"

    # The real values are nowhere the agent or an API client can look, nor in the log.
    out, _ = sh(platform, sid, "env; cat /proc/1/environ; ls -la /run/lap /etc/lap")
    bodies.append(out)
    bodies.append(platform.api("GET", "/agents/vault-e2e").text)
    bodies.append(platform.api("GET", f"/sessions/{sid}/interceptions").text)
    log = platform.log.read_text()
    assert "HTTP Request:" not in log  # no line per runner or sidecar call
    for value in (secret, rotated):
        assert value not in log
        for body in bodies:
            assert value not in body
    for body in bodies[2:4]:  # interceptions and security events carry names, not stubs
        assert stub not in body


def test_stop_on_vault_block_stops_the_session(platform, echo):
    secret = "ghp_e2e_stop_" + secrets.token_hex(16)
    make_agent(platform, "vault-e2e-stop", secret, stop_on_vault_block=True)
    session = platform.ready_session("vault-e2e-stop")
    out, _ = sh(platform, session["id"], curl(echo.port, host="127.0.0.1"))
    assert "credential_not_allowed_for_host" in out
    events = platform.api("GET", f"/sessions/{session['id']}/security-events").json()
    assert len(events) == 1
    stopped = platform.wait_status(session["id"], until=("dead",))
    assert stopped["status"] == "dead"
    assert stopped["failure_reason"] == "vault blocked a credential"
    assert secret not in platform.log.read_text()


def test_git_httpx_and_node_fetch_in_the_sandbox_send_the_real_value(platform, upstream):
    """The clients agents use most, each with the sandbox's own environment and tools: git
    (Basic auth from a credential helper), httpx (the harness tools' ``httpx2``) and Node's
    fetch (the tools' Node.js, which honours ``NODE_USE_ENV_PROXY``)."""
    require_cli("node")
    secret = "ghp_e2e_" + secrets.token_hex(16)
    make_agent(platform, "vault-clients", secret)
    sid = platform.ready_session("vault-clients")["id"]
    base = f"https://localhost:{upstream.port}"

    def authorization(path: str) -> str:
        (seen,) = [r for r in upstream.received if r["path"] == path]
        return {k.lower(): v for k, v in seen["headers"]}.get("authorization", "")

    upstream.git_password = secret
    helper = '!f() { echo username=x-access-token; echo "password=$GITHUB_TOKEN"; }; f'
    git = ["git", "-c", f"credential.helper={helper}", "ls-remote", f"{base}/repo.git"]
    out, code = via_vault(platform, sid, ["GIT_TERMINAL_PROMPT=0", *git])
    assert code == 0, out
    asked = [r for r in upstream.received if r["path"].startswith("/repo.git")]
    assert len(asked) == 2  # anonymous (401), then with the swapped Basic credentials

    script = (
        "import os, sys, httpx2; "
        "auth = {'Authorization': 'Bearer ' + os.environ['GITHUB_TOKEN']}; "
        "print(httpx2.get(sys.argv[1], headers=auth, timeout=20).status_code)"
    )
    python = ["env", f"PYTHONPATH={TOOLS_PYTHONPATH}", "python3", "-c", script, f"{base}/httpx"]
    out, code = via_vault(platform, sid, python)
    assert (code, out.strip()) == (0, "200"), out
    assert authorization("/httpx") == f"Bearer {secret}"

    script = (
        "fetch(process.argv[1], {headers: {authorization: 'Bearer ' + process.env.GITHUB_TOKEN}})"
        ".then(r => r.json()).then(j => console.log(j.headers.length))"
        ".catch(e => { console.error(String(e.cause || e)); process.exit(3); })"
    )
    out, code = via_vault(platform, sid, ["node", "-e", script, f"{base}/node"])
    assert code == 0, out
    assert authorization("/node") == f"Bearer {secret}"
    assert secret not in out
    assert secret not in platform.log.read_text()
