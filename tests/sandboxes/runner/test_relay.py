"""--relay HOST:PORT=unix:PATH forwards loopback TCP connections to a unix socket."""

from __future__ import annotations

import asyncio
import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_relay_forwards_both_ways_with_half_close(start_runner, workdir):
    upstream_path = str(workdir / "upstream.sock")
    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client half-closes
        received.append(data)
        writer.write(b"upstream got " + str(len(data)).encode() + b": " + data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(upstream, upstream_path)
    port = free_port()
    start_runner("--relay", f"127.0.0.1:{port}=unix:{upstream_path}")
    payload = b"CONNECT vault:443 HTTP/1.1\r\n" + bytes(range(256)) * 1000
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    server.close()
    assert received == [payload]
    assert answer == b"upstream got %d: " % len(payload) + payload.upper()


async def test_relay_closes_when_the_unix_socket_is_missing(start_runner, workdir):
    port = free_port()
    start_runner("--relay", f"127.0.0.1:{port}=unix:{workdir}/absent.sock")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
