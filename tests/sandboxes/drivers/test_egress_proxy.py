"""The egress proxy: its host rules, and CONNECT / absolute-form forwarding over a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket

import pytest

from sandboxes.drivers.egress_proxy import EgressRules, Refused, serve


def _allowed(rules: EgressRules, host: str, address: str) -> bool:
    try:
        rules.check_host(host)
        rules.check_address(host, ipaddress.ip_address(address))
    except Refused:
        return False
    return True


@pytest.mark.parametrize(
    ("allow", "deny", "host", "address", "expected"),
    [
        ((), (), "example.com", "93.184.215.14", True),
        ((), (), "localhost", "127.0.0.1", False),
        ((), (), "evil.example", "10.1.2.3", False),
        ((), (), "evil.example", "192.168.1.1", False),
        ((), (), "evil.example", "172.16.0.1", False),
        ((), (), "evil.example", "169.254.169.254", False),
        ((), (), "evil.example", "100.100.100.200", False),
        ((), (), "evil.example", "::1", False),
        ((), (), "evil.example", "::ffff:127.0.0.1", False),
        ((), (), "evil.example", "fe80::1", False),
        ((), (), "evil.example", "0.0.0.0", False),  # noqa: S104
        ((), (), "127.0.0.1", "127.0.0.1", False),
        (("127.0.0.1",), (), "127.0.0.1", "127.0.0.1", True),
        (("localhost",), (), "localhost", "127.0.0.1", True),
        (("127.0.0.0/8",), (), "localhost", "127.0.0.1", True),
        (("*.example.com",), (), "api.example.com", "93.184.215.14", True),
        (("*.example.com",), (), "example.com", "93.184.215.14", False),
        (("*.example.com",), (), "evil.com", "93.184.215.14", False),
        (("*.example.com",), (), "internal.example.com", "10.0.0.5", False),
        (("api.github.com",), (), "API.GitHub.com.", "140.82.112.6", True),
        (("api.github.com",), (), "github.com", "140.82.112.6", False),
        (("140.82.112.0/20",), (), "github.com", "140.82.112.6", True),
        (("140.82.112.0/20",), (), "github.com", "8.8.8.8", False),
        ((), ("*.example.com",), "a.example.com", "93.184.215.14", False),
        (("*.example.com",), ("bad.example.com",), "bad.example.com", "93.184.215.14", False),
        ((), ("93.184.0.0/16",), "example.com", "93.184.215.14", False),
        (("127.0.0.1",), ("127.0.0.1",), "127.0.0.1", "127.0.0.1", False),
    ],
)
def test_rules(allow, deny, host, address, expected):
    assert _allowed(EgressRules(allow, deny), host, address) is expected


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP server: answers with the request head it received, as JSON."""
    head = await reader.readuntil(b"\r\n\r\n")
    body = json.dumps({"head": head.decode()}).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    writer.close()


@pytest.fixture
async def upstream():
    server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def _proxy(tmp_path, rules: EgressRules):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "proxy.sock"
    sock.bind(str(path))
    sock.listen()
    task = asyncio.create_task(serve(sock, rules))
    try:
        yield str(path)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _exchange(path: str, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


async def test_forwards_absolute_form_request_to_an_allowed_host(tmp_path, upstream):
    async with _proxy(tmp_path, EgressRules(["127.0.0.1"])) as path:
        answer = await _exchange(
            path,
            f"GET http://127.0.0.1:{upstream}/hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\r\n".encode(),
        )
    assert answer.startswith(b"HTTP/1.1 200 OK")
    head = json.loads(answer.split(b"\r\n\r\n", 1)[1])["head"]
    assert head.startswith("GET /hello?x=1 HTTP/1.1\r\n")
    assert "Proxy-" not in head
    assert "Connection: close" in head


async def test_tunnels_connect_to_an_allowed_host(tmp_path, upstream):
    async with _proxy(tmp_path, EgressRules(["127.0.0.1"])) as path:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(f"CONNECT 127.0.0.1:{upstream} HTTP/1.1\r\n\r\n".encode())
        established = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"GET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    assert established.startswith(b"HTTP/1.1 200")
    assert b"GET /tunnelled HTTP/1.1" in answer


@pytest.mark.parametrize(
    ("allow", "deny", "reason"),
    [
        ((), (), "is not public"),
        (("10.0.0.0/8",), (), "is not public"),
        (("127.0.0.1",), ("127.0.0.0/8",), "is in deny_out"),
    ],
)
async def test_refuses_denied_destinations(tmp_path, upstream, allow, deny, reason):
    async with _proxy(tmp_path, EgressRules(allow, deny)) as path:
        connect = await _exchange(path, f"CONNECT 127.0.0.1:{upstream} HTTP/1.1\r\n\r\n".encode())
        plain = await _exchange(
            path, f"GET http://localhost:{upstream}/ HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
    for answer in (connect, plain):
        assert answer.startswith(b"HTTP/1.1 403 Forbidden")
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "egress_denied"
        assert reason in body["reason"]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT :443 HTTP/1.1\r\n\r\n",
        b"CONNECT a.example:99999 HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
async def test_rejects_what_it_does_not_proxy(tmp_path, request_head):
    async with _proxy(tmp_path, EgressRules()) as path:
        answer = await _exchange(path, request_head)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")


async def test_unreachable_destination_is_a_bad_gateway(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with _proxy(tmp_path, EgressRules(["127.0.0.1"])) as path:
        answer = await _exchange(path, f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502")
