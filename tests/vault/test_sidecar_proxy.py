"""The vault sidecar end to end: real mitmproxy subprocess, trustme TLS upstreams, real clients."""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import socket
import socketserver
import ssl
import threading
import urllib.parse
import zlib

import brotli
import httpx
import pytest
import trustme
from backports import zstd
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    VaultEnv,
    pki,
    session_sidecar,
    upstream,
    vault_env,
)
from tests.vault.sidecar_support import Upstream, basic, received_headers


def _connect(proxy: str, authority: str) -> tuple[int, bytes]:
    """Send a raw CONNECT; return the status and the body of a refusal."""
    host, port = proxy.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body


def test_header_basic_and_query_stubs_arrive_swapped(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    encoded = urllib.parse.quote(stub, safe="").replace("_", "%5F")
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/repos?token={stub}&other={encoded}&plain=1",
            headers={
                "Authorization": f"Bearer {stub}",
                "X-Custom": f"prefix-{stub}-suffix",
                "X-Basic": basic("x-access-token", stub),
            },
        )
    assert response.status_code == 200
    seen = vault_env.upstream.received[-1]
    headers = received_headers(seen)
    assert headers["authorization"] == f"Bearer {value}"
    assert headers["x-custom"] == f"prefix-{value}-suffix"
    assert headers["x-basic"] == basic("x-access-token", value)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(seen["path"]).query)
    assert query == {"token": [value], "other": [value], "plain": ["1"]}
    assert stub not in json.dumps(seen)


def test_basic_authorization_header_is_decoded_swapped_and_reencoded(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    with vault_env.sidecar.client() as client:
        assert client.get(f"{vault_env.upstream.url}/git", auth=("x-access-token", stub)).is_success
    assert received_headers(vault_env.upstream.received[-1])["authorization"] == basic(
        "x-access-token", value
    )


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
def test_body_stub_swapped_in_any_encoding(vault_env: VaultEnv, encoding, compress, content_type):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    body = json.dumps({"token": stub, "note": "x" * 100}).encode()
    sent = compress(body)
    with vault_env.sidecar.client() as client:
        response = client.post(
            f"{vault_env.upstream.url}/body",
            content=sent,
            headers={"Content-Encoding": encoding, "Content-Type": content_type},
        )
    assert response.status_code == 200
    seen = vault_env.upstream.received[-1]
    # aiohttp reads Content-Length bytes and decodes them by Content-Encoding: a length not
    # fixed after the swap would cut the body short or fail to decode it. (Comparing it with
    # the length sent is no check: the compressed sizes can coincide.)
    expected = body.replace(stub.encode(), value.encode())
    assert seen["body"].encode() == expected
    assert received_headers(seen)["content-encoding"] == encoding
    if encoding == "identity":
        assert int(received_headers(seen)["content-length"]) == len(expected)


@pytest.mark.parametrize("step", [1, 3, 7])
def test_chunked_body_with_stub_split_at_every_offset(vault_env: VaultEnv, step: int):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    payload = f"head {stub} tail".encode()
    start = payload.index(stub.encode())
    with vault_env.sidecar.client() as client:
        for offset in range(start, start + len(stub) + 1, step):

            def body(offset=offset):
                yield payload[:offset]
                yield payload[offset:]

            response = client.post(f"{vault_env.upstream.url}/upload", content=body())
            assert response.status_code == 200
            seen = vault_env.upstream.received[-1]
            assert seen["tail"] == f"head {value} tail", offset
            assert "chunked" in received_headers(seen).get("transfer-encoding", "")


def test_chunked_body_with_stub_in_one_byte_chunks(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    payload = f"{stub}|{stub}".encode()
    with vault_env.sidecar.client() as client:
        response = client.post(
            f"{vault_env.upstream.url}/upload",
            content=(payload[i : i + 1] for i in range(len(payload))),
        )
    assert response.status_code == 200
    assert vault_env.upstream.received[-1]["tail"] == f"{value}|{value}"


def test_websocket_fragmented_message_swapped_and_echo_scrubbed(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    context = ssl.create_default_context(cafile=str(vault_env.sidecar.root_pem))
    uri = f"wss://localhost:{vault_env.upstream.port}/ws"
    with ws_connect(uri, proxy=vault_env.sidecar.proxy_url, ssl=context) as ws:
        ws.send(["token=", stub[:10], stub[10:30], stub[30:], " end"])
        echoed = ws.recv(timeout=10)
        ws.send(f"again {stub}")
        echoed_again = ws.recv(timeout=10)
    messages = [r["ws"] for r in vault_env.upstream.received if "ws" in r]
    assert messages == [f"token={value} end", f"again {value}"]
    assert echoed == f"token={stub} end"
    assert echoed_again == f"again {stub}"


@pytest.mark.parametrize(
    ("stub", "reason", "credentials"),
    [
        ("OTHER", "credential_not_allowed_for_host", ["OTHER"]),
        (None, "unknown_stub", []),
    ],
)
def test_websocket_message_with_a_refused_stub_is_blocked_and_closed(
    vault_env: VaultEnv, stub, reason, credentials
):
    """Not forwarded, recorded as blocked (the tripwire), and the connection ends at once."""
    refused = vault_env.stub(stub) if stub else "lap_stub_NOPE_" + "a" * 32
    context = ssl.create_default_context(cafile=str(vault_env.sidecar.root_pem))
    uri = f"wss://localhost:{vault_env.upstream.port}/ws"
    with ws_connect(uri, proxy=vault_env.sidecar.proxy_url, ssl=context) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        after = vault_env.sidecar.records()[-1]["seq"]
        ws.send(f"token={refused}")
        with pytest.raises(ConnectionClosed):  # well before the timeout: closed, not ignored
            ws.recv(timeout=10)
    assert [r["ws"] for r in vault_env.upstream.received if "ws" in r] == ["hello"]
    (record,) = vault_env.sidecar.records(after)
    assert record["decision"] == "blocked"
    assert (record["reason"], record["credentials"]) == (reason, credentials)
    assert (record["host"], record["path"]) == ("localhost", "/ws")


def test_stub_to_disallowed_host_is_blocked_and_not_forwarded(vault_env: VaultEnv):
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/x", headers={"Authorization": vault_env.stub("OTHER")}
        )
    assert response.status_code == 403
    assert response.json() == {
        "error": "vault_blocked",
        "reason": "credential_not_allowed_for_host",
        "credential": "OTHER",
    }
    assert vault_env.upstream.received == []


def test_several_stubs_are_all_or_nothing(vault_env: VaultEnv):
    with vault_env.sidecar.client() as client:
        response = client.post(
            f"{vault_env.upstream.url}/x",
            headers={"Authorization": f"Bearer {vault_env.stub('GH')}"},
            json={"other": vault_env.stub("OTHER")},
        )
    assert response.status_code == 403
    assert response.json()["credential"] == "OTHER"
    assert vault_env.upstream.received == []


def test_unknown_stub_is_blocked(vault_env: VaultEnv):
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/x",
            headers={"Authorization": "Bearer lap_stub_GH_00000000000000000000000000000000"},
        )
    assert response.status_code == 403
    assert response.json()["reason"] == "unknown_stub"
    assert vault_env.upstream.received == []


def test_lookalike_stub_differing_in_case_is_not_swapped(vault_env: VaultEnv):
    lookalike = vault_env.stub("GH").upper()
    with vault_env.sidecar.client() as client:
        assert client.get(f"{vault_env.upstream.url}/x", headers={"X-T": lookalike}).is_success
    assert received_headers(vault_env.upstream.received[-1])["x-t"] == lookalike


def test_host_header_differing_from_connect_authority_is_refused(vault_env: VaultEnv):
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/x",
            headers={"Host": "api.example.test", "Authorization": vault_env.stub("OTHER")},
        )
    assert response.status_code == 421
    assert response.json()["reason"] == "authority_mismatch"
    assert vault_env.upstream.received == []


@pytest.mark.parametrize(
    "authority",
    [
        "127.0.0.1:{port}",
        "2130706433:{port}",
        "0x7f.0.0.1:{port}",
        "127.1:{port}",
        "[::1]:{port}",
        "[::ffff:127.0.0.1]:{port}",
        "169.254.169.254:80",
        "10.1.2.3:443",
        "localhost.:{port}",
    ],
)
def test_connect_to_special_addresses_is_refused(vault_env: VaultEnv, authority: str):
    vault_env.egress = {"allow_out": [], "deny_out": []}
    vault_env.push()
    status, body = _connect(
        vault_env.sidecar.address, authority.format(port=vault_env.upstream.port)
    )
    assert status == 403
    assert json.loads(body)["reason"] == "egress_denied"


def test_hostname_resolving_to_loopback_is_refused_unless_named(vault_env: VaultEnv):
    vault_env.egress = {"allow_out": [], "deny_out": []}
    vault_env.push()
    status, _ = _connect(vault_env.sidecar.address, f"localhost:{vault_env.upstream.port}")
    assert status == 403
    vault_env.egress = {"allow_out": ["localhost"], "deny_out": []}
    vault_env.push()
    status, _ = _connect(vault_env.sidecar.address, f"localhost:{vault_env.upstream.port}")
    assert status == 200


def test_deny_out_wins_and_allow_out_limits(vault_env: VaultEnv):
    vault_env.egress = {"allow_out": ["localhost"], "deny_out": ["LOCALHOST."]}
    vault_env.push()
    status, _ = _connect(vault_env.sidecar.address, f"localhost:{vault_env.upstream.port}")
    assert status == 403
    vault_env.egress = {"allow_out": ["api.example.test"], "deny_out": []}
    vault_env.push()
    status, _ = _connect(vault_env.sidecar.address, f"localhost:{vault_env.upstream.port}")
    assert status == 403


def test_loopback_ip_allowed_when_listed_but_secret_bound_to_name(vault_env: VaultEnv):
    vault_env.egress = {"allow_out": ["localhost", "127.0.0.1"], "deny_out": []}
    vault_env.push()
    url = f"https://127.0.0.1:{vault_env.upstream.port}/x"
    with vault_env.sidecar.client() as client:
        assert client.get(url).status_code == 200
        blocked = client.get(url, headers={"Authorization": vault_env.stub("GH")})
    assert blocked.status_code == 403
    assert blocked.json()["reason"] == "credential_not_allowed_for_host"
    assert len(vault_env.upstream.received) == 1


def test_plain_http_never_carries_a_secret(vault_env: VaultEnv):
    vault_env.egress = {"allow_out": ["localhost"], "deny_out": []}
    vault_env.push()
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"http://localhost:{vault_env.upstream.port}/x",
            headers={"Authorization": vault_env.stub("GH")},
        )
        # A stub for another host is the tripwire, whatever the scheme.
        elsewhere = client.get(
            f"http://localhost:{vault_env.upstream.port}/y",
            headers={"Authorization": vault_env.stub("OTHER")},
        )
    assert response.status_code == 403
    assert response.json()["reason"] == "credential_requires_tls"
    assert elsewhere.status_code == 403
    assert elsewhere.json()["reason"] == "credential_not_allowed_for_host"
    assert vault_env.upstream.received == []


class _Sink(socketserver.BaseRequestHandler):
    """Keeps every byte a connection sends (until it ends, or 2 s of quiet), then answers 200."""

    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            while data := self.request.recv(65536):
                self.server.received += data  # type: ignore[attr-defined]
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_streamed_plain_http_body_never_carries_a_secret(vault_env: VaultEnv):
    """A body large enough to stream, over plain HTTP to the stub's own host: cut before it."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sink)
    server.received = b""  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vault_env.egress = {"allow_out": ["localhost"], "deny_out": []}
    vault_env.push()
    stub = vault_env.stub("GH")
    try:
        with vault_env.sidecar.client() as client:
            response = client.post(
                f"http://localhost:{server.server_address[1]}/upload",
                content=iter([b"x" * 70000, f"token={stub}".encode()]),
                timeout=10,
            )
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 502
    assert vault_env.value("GH").encode() not in server.received  # type: ignore[attr-defined]
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"]) == ("blocked", "credential_requires_tls")
    assert record["credentials"] == ["GH"]


def test_plain_websocket_message_never_carries_a_secret(vault_env: VaultEnv):
    received: list[str | bytes] = []

    def echo(ws) -> None:
        for message in ws:
            received.append(message)
            ws.send(message)

    vault_env.egress = {"allow_out": ["localhost"], "deny_out": []}
    vault_env.push()
    with ws_serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"ws://localhost:{server.socket.getsockname()[1]}/ws"
        with ws_connect(uri, proxy=vault_env.sidecar.proxy_url) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(f"token={vault_env.stub('GH')}")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        server.shutdown()
    assert received == ["hello"]
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"]) == ("blocked", "credential_requires_tls")
    assert record["credentials"] == ["GH"]


class _PortEcho(http.server.BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 handler answering with the client port the request came from."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_plain_http_keep_alive_reuses_one_upstream_connection(vault_env: VaultEnv):
    """The sidecar connects to the address it checked, then names the connection by its host
    again: with the IP left on it, mitmproxy never reused the connection, and the sixth
    request on one client connection waited forever (five connections per address)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PortEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vault_env.egress = {"allow_out": ["localhost"], "deny_out": []}
    vault_env.push()
    try:
        with vault_env.sidecar.client() as client:
            url = f"http://localhost:{server.server_address[1]}/x"
            ports = {client.get(url, timeout=5).text for _ in range(8)}
    finally:
        server.shutdown()
        server.server_close()
    assert len(ports) == 1


def test_untrusted_upstream_certificate_gives_502_and_no_request(vault_env: VaultEnv):
    rogue = Upstream(trustme.CA()).start()
    try:
        with vault_env.sidecar.client() as client:
            try:
                response = client.get(
                    f"https://localhost:{rogue.port}/x",
                    headers={"Authorization": vault_env.stub("GH")},
                )
                status = response.status_code
            except httpx.ProxyError as error:
                status = int(str(error).split()[0])
        assert status == 502
        assert rogue.received == []
    finally:
        rogue.stop()


def test_echoed_values_are_scrubbed_in_headers_and_body(vault_env: VaultEnv):
    stub = vault_env.stub("GH")
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/x", headers={"Authorization": stub, "X-Echo": stub}
        )
    assert response.headers["x-echoed"] == stub
    assert vault_env.value("GH") not in response.text
    assert stub in response.text
    seen = vault_env.upstream.received[-1]
    assert received_headers(seen)["authorization"] == vault_env.value("GH")


def test_sse_stream_with_values_split_across_chunks_is_scrubbed(vault_env: VaultEnv):
    value, other = vault_env.value("GH"), vault_env.value("OTHER")
    events = [f"start {value} end", "plain", f"{other}{value}", value]
    with (
        vault_env.sidecar.client() as client,
        client.stream(
            "GET", f"{vault_env.upstream.url}/sse", params={"event": events, "size": 3}
        ) as response,
    ):
        chunks = list(response.iter_raw())
    body = b"".join(chunks).decode()
    assert len(chunks) > 1
    assert value not in body
    assert other not in body
    stub, other_stub = vault_env.stub("GH"), vault_env.stub("OTHER")
    expected = [f"start {stub} end", "plain", f"{other_stub}{stub}", stub]
    assert body == "".join(f"data: {e}\n\n" for e in expected)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "br", "zstd"])
def test_streamed_compressed_response_is_decoded_and_scrubbed(vault_env: VaultEnv, encoding):
    value, stub = vault_env.value("GH"), vault_env.stub("GH")
    text = f"start {value} middle {value}{value} end"
    with (
        vault_env.sidecar.client() as client,
        client.stream(
            "GET",
            f"{vault_env.upstream.url}/encoded",
            params={"encoding": encoding, "text": text, "size": 5},
        ) as response,
    ):
        chunks = list(response.iter_raw())
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert b"".join(chunks).decode() == f"start {stub} middle {stub}{stub} end"
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"]) == ("allowed", None)


def test_streamed_response_in_unknown_encoding_is_refused(vault_env: VaultEnv):
    value = vault_env.value("GH")
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/encoded",
            params={"encoding": "x-unknown", "text": f"start {value} end"},
        )
    assert response.status_code == 502
    assert response.json() == {"error": "vault_blocked", "reason": "unscannable_encoding"}
    assert value not in response.text
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"], record["status"]) == (
        "blocked",
        "unscannable_encoding",
        502,
    )


def test_streamed_response_not_decodable_is_cut_off(vault_env: VaultEnv):
    value = vault_env.value("GH")
    with vault_env.sidecar.client() as client:
        response = client.get(
            f"{vault_env.upstream.url}/encoded",
            params={"encoding": "plain", "label": "gzip", "text": f"start {value} end"},
        )
    assert value not in response.text
    assert response.content == b""
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"]) == ("blocked", "unscannable_encoding")


def test_rotation_takes_effect_on_the_next_request(vault_env: VaultEnv):
    url = f"{vault_env.upstream.url}/x"
    old = vault_env.value("GH")
    with vault_env.sidecar.client() as client:
        client.get(url, headers={"Authorization": vault_env.stub("GH")})
        vault_env.secrets["GH"]["value"] = "rotated-" + old[::-1]
        vault_env.push()
        client.get(url, headers={"Authorization": vault_env.stub("GH")})
    first, second = (received_headers(r)["authorization"] for r in vault_env.upstream.received)
    assert first == old
    assert second == "rotated-" + old[::-1]


def test_revoked_secret_stub_becomes_unknown(vault_env: VaultEnv):
    stub = vault_env.stub("GH")
    del vault_env.secrets["GH"]
    vault_env.push()
    with vault_env.sidecar.client() as client:
        response = client.get(f"{vault_env.upstream.url}/x", headers={"Authorization": stub})
    assert response.json()["reason"] == "unknown_stub"


def test_records_hold_no_query_no_stub_no_value(vault_env: VaultEnv):
    before = vault_env.sidecar.records()
    after = before[-1]["seq"] if before else 0
    stub = vault_env.stub("GH")
    with vault_env.sidecar.client() as client:
        client.get(f"{vault_env.upstream.url}/p/{stub}/q?token={stub}", headers={"A": stub})
        client.get(f"{vault_env.upstream.url}/x", headers={"A": vault_env.stub("OTHER")})
    records = vault_env.sidecar.records(after)
    assert [r["decision"] for r in records] == ["allowed", "blocked"]
    assert records[0]["credentials"] == ["GH"]
    assert records[0]["path"] == "/p/[stub]/q"
    assert records[0]["status"] == 200
    assert records[1]["reason"] == "credential_not_allowed_for_host"
    assert records[1]["credentials"] == ["OTHER"]
    text = json.dumps(records)
    for secret in vault_env.secrets.values():
        assert secret["stub"] not in text
        assert secret["value"] not in text
    assert "token" not in text


def test_interceptions_need_the_read_token(vault_env: VaultEnv):
    with vault_env.sidecar.control_client() as client:
        assert client.get("/interceptions").status_code == 401
        assert (
            client.get("/interceptions", headers={"Authorization": "Bearer x"}).status_code == 401
        )
        assert client.get("/healthz").json() == {"ok": True, "version": vault_env.version}


def test_streamed_body_with_stub_for_other_host_never_completes_upstream(vault_env: VaultEnv):
    """Its headers are upstream already: the upstream connection is cut before the stub."""
    stub = vault_env.stub("OTHER")

    def body():
        yield b"x" * 70000
        yield f"head {stub[:12]}".encode()
        yield f"{stub[12:]} tail".encode()

    with vault_env.sidecar.client() as client:
        response = client.post(f"{vault_env.upstream.url}/upload", content=body())
    assert response.status_code == 502
    assert not [r for r in vault_env.upstream.received if r["path"] == "/upload"]
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["reason"]) == ("blocked", "credential_not_allowed_for_host")
    assert record["credentials"] == ["OTHER"]
