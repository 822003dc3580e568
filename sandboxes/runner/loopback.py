"""A minimal HTTP/1.1 client for a harness server inside the sandbox (``opencode serve``).

Loopback only (127.0.0.1, no TLS, no proxy), one request per connection, JSON bodies, and
Server-Sent Events; the runner imports nothing beyond the standard library, pyte and
websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

HOST = "127.0.0.1"
LIMIT = 64 * 1024 * 1024  # one line of a body (an SSE event) may be large


class LoopbackError(Exception):
    """The server answered with an error status or something that is not HTTP."""


async def _open(
    port: int, method: str, path: str, body: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=LIMIT)
    data = b"" if body is None else json.dumps(body).encode()
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: application/json, text/event-stream",
        "Connection: close",
        f"Content-Length: {len(data)}",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
    await writer.drain()
    status_line = await reader.readline()
    try:
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        writer.close()
        raise LoopbackError(f"not an HTTP answer: {status_line[:100]!r}") from None
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return reader, writer, status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive; LoopbackError if the server breaks off or garbles it."""
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                yield await reader.readexactly(size)
                await reader.readline()
        elif "content-length" in headers:
            yield await reader.readexactly(int(headers["content-length"]))
        else:
            while data := await reader.read(65536):
                yield data
    except (asyncio.IncompleteReadError, ValueError) as exc:
        raise LoopbackError(f"the answer broke off: {exc}") from None


async def request(port: int, method: str, path: str, body: Any = None) -> Any:
    """Send one request; the parsed JSON answer (None if empty). LoopbackError for a non-2xx
    answer, OSError if nothing listens."""
    reader, writer, status, headers = await _open(port, method, path, body)
    try:
        data = b"".join([chunk async for chunk in _body(reader, headers)])
    finally:
        writer.close()
    if not 200 <= status < 300:
        raise LoopbackError(f"{method} {path} answered {status}: {data[:300]!r}")
    try:
        return json.loads(data) if data.strip() else None
    except ValueError:
        raise LoopbackError(f"{method} {path} sent invalid JSON: {data[:300]!r}") from None


async def events(port: int, path: str) -> AsyncIterator[dict[str, Any]]:
    """The ``data:`` payloads of a Server-Sent Events stream, parsed as JSON objects."""
    reader, writer, status, headers = await _open(port, "GET", path, None)
    try:
        if status != 200:
            raise LoopbackError(f"GET {path} answered {status}")
        pending = b""
        data: list[bytes] = []
        async for chunk in _body(reader, headers):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                elif not line and data:
                    with contextlib.suppress(ValueError):
                        event = json.loads(b"\n".join(data))
                        if isinstance(event, dict):
                            yield event
                    data = []
    finally:
        writer.close()
