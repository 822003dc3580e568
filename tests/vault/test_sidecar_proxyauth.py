"""The sidecar's proxy credential (``--proxyauth-file``): required on every CONNECT and every
plain-HTTP request before any other check, never forwarded, never logged."""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

import http.server
import json
import secrets
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.addon import proxy_authorization
from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    ALL_SECRETS,
    VaultEnv,
    new_secret,
    pki,
    start_sidecar,
    upstream,
)
from tests.vault.sidecar_support import Pki, Sidecar, Upstream, basic

SECRET = secrets.token_urlsafe(32)
RIGHT = proxy_authorization(SECRET.encode()).decode()
WRONG = {
    "missing": None,
    "wrong secret": basic("lap", secrets.token_urlsafe(32)),
    "wrong user": basic("agent", SECRET),
    "bare secret": SECRET,
}
ALL_SECRETS.update((SECRET, RIGHT.split()[1]))


class PlainEcho:
    """A plain-HTTP server on 127.0.0.1 that answers with the headers it received."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                received.append({k.lower(): v for k, v in self.headers.items()})
                body = b"plain-echo"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sidecar_with_proxyauth(pki: Pki) -> Sidecar:
    path = Path(tempfile.mkdtemp(prefix="lap-proxyauth-")) / "proxyauth.txt"
    path.write_text(f"  {SECRET}\n")
    return start_sidecar(pki, "--proxyauth-file", str(path))


@pytest.fixture(scope="module")
def plain() -> Iterator[PlainEcho]:
    server = PlainEcho()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_env(pki: Pki, upstream: Upstream) -> Iterator[VaultEnv]:
    sidecar = _sidecar_with_proxyauth(pki)
    env = VaultEnv(pki, upstream, sidecar)
    env.secrets["GH"] = new_secret("GH", ["localhost"])
    env.push()
    yield env
    sidecar.stop()


def _request(proxy: str, head: str) -> tuple[int, dict[str, str], bytes, socket.socket]:
    """Send ``head`` to the proxy; the answer's status, headers and body, and the open socket."""
    host, port = proxy.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body, sock


def _ask(proxy: str, head: str) -> tuple[int, dict[str, str], bytes]:
    """``_request``, the socket closed."""
    status, headers, body, sock = _request(proxy, head)
    sock.close()
    return status, headers, body


def _head(request_line: str, host: str, authorization: str | None) -> str:
    extra = "" if authorization is None else f"Proxy-Authorization: {authorization}\r\n"
    return f"{request_line} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


def _assert_407(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 407
    assert headers["proxy-authenticate"] == 'Basic realm="lap-vault"'
    assert headers["x-vault-blocked"] == "proxy_auth_required"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "vault_blocked", "reason": "proxy_auth_required"}


def _last_record(env: VaultEnv) -> dict[str, Any]:
    return env.sidecar.records()[-1]


@pytest.mark.parametrize("authorization", WRONG.values(), ids=WRONG.keys())
def test_connect_without_the_credential_gets_407(auth_env: VaultEnv, authorization):
    auth_env.upstream.received.clear()
    authority = f"localhost:{auth_env.upstream.port}"
    _assert_407(
        *_ask(auth_env.sidecar.address, _head(f"CONNECT {authority}", authority, authorization))
    )
    assert auth_env.upstream.received == []
    record = _last_record(auth_env)
    assert (record["method"], record["host"], record["path"]) == ("CONNECT", "localhost", "")
    assert (record["decision"], record["reason"], record["status"]) == (
        "blocked",
        "proxy_auth_required",
        407,
    )


@pytest.mark.parametrize("authorization", WRONG.values(), ids=WRONG.keys())
def test_plain_http_without_the_credential_gets_407(
    auth_env: VaultEnv, plain: PlainEcho, authorization
):
    plain.received.clear()
    authority = f"localhost:{plain.port}"
    head = _head(f"GET http://{authority}/x?q=1", authority, authorization)
    _assert_407(*_ask(auth_env.sidecar.address, head))
    assert plain.received == []
    record = _last_record(auth_env)
    assert (record["method"], record["host"], record["path"]) == ("GET", "localhost", "/x")
    assert (record["decision"], record["reason"], record["status"]) == (
        "blocked",
        "proxy_auth_required",
        407,
    )


def test_tunnel_opened_with_the_credential_needs_it_no_more(auth_env: VaultEnv):
    auth_env.upstream.received.clear()
    authority = f"localhost:{auth_env.upstream.port}"
    status, _, _, sock = _request(
        auth_env.sidecar.address, _head(f"CONNECT {authority}", authority, RIGHT)
    )
    assert status == 200
    context = ssl.create_default_context(cafile=str(auth_env.sidecar.root_pem))
    with context.wrap_socket(sock, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        for extra in ("", "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"):
            tls.sendall(
                f"GET /inside HTTP/1.1\r\nHost: {authority}\r\n"
                f"Authorization: Bearer {auth_env.stub('GH')}\r\n{extra}\r\n".encode()
            )
            assert reader.readline().split()[1] == b"200"
            length = 0
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            reader.read(length)
    assert len(auth_env.upstream.received) == 2
    for seen in auth_env.upstream.received:
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["authorization"] == f"Bearer {auth_env.value('GH')}"
        assert "proxy-authorization" not in headers


def test_clients_with_the_credential_work_and_it_never_reaches_the_upstream(
    auth_env: VaultEnv, plain: PlainEcho
):
    auth_env.upstream.received.clear()
    plain.received.clear()
    proxy = httpx.Proxy(auth_env.sidecar.proxy_url, auth=("lap", SECRET))
    context = ssl.create_default_context(cafile=str(auth_env.sidecar.root_pem))
    with httpx.Client(proxy=proxy, verify=context, timeout=30) as client:
        tls = client.get(
            f"{auth_env.upstream.url}/x",
            headers={"Authorization": f"Bearer {auth_env.stub('GH')}"},
        )
        cleartext = client.get(f"http://localhost:{plain.port}/y")
    assert tls.status_code == 200
    headers = {k.lower(): v for k, v in auth_env.upstream.received[-1]["headers"]}
    assert headers["authorization"] == f"Bearer {auth_env.value('GH')}"
    assert "proxy-authorization" not in headers
    assert (cleartext.status_code, cleartext.content) == (200, b"plain-echo")
    assert len(plain.received) == 1
    assert "proxy-authorization" not in plain.received[0]
    assert SECRET not in auth_env.sidecar.log_path.read_text(errors="replace")


def test_the_credential_is_checked_before_the_vault_is_ready(pki: Pki, upstream: Upstream):
    sidecar = _sidecar_with_proxyauth(pki)
    try:
        authority = f"localhost:{upstream.port}"
        for line in (f"CONNECT {authority}", f"GET http://{authority}/"):
            _assert_407(*_ask(sidecar.address, _head(line, authority, None)))
            status, _, body = _ask(sidecar.address, _head(line, authority, RIGHT))
            assert (status, json.loads(body)["reason"]) == (503, "vault_not_ready")
    finally:
        sidecar.stop()
