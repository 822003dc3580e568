"""A small WebSocket terminal client for the end-to-end tests."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import ClientConnection, connect


async def attach(
    url: str, token: str | None, additional_headers: dict | None = None, **options
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(additional_headers or {})
    return await connect(url, additional_headers=headers, max_size=None, **options)


async def resize(ws: ClientConnection, cols: int, rows: int) -> None:
    await ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))


async def read_until(ws: ClientConnection, needle: bytes, timeout: float = 10.0) -> bytes:
    """Collect output frames until ``needle`` has appeared; fails on timeout."""
    output = b""
    async with asyncio.timeout(timeout):
        while needle not in output:
            frame = await ws.recv()
            output += frame if isinstance(frame, bytes) else frame.encode()
    return output


async def run_once(url: str, token: str | None, command: bytes, marker: bytes, **options) -> bytes:
    """Attach, type ``command``, read until ``marker`` has appeared, detach; the output."""
    ws = await attach(url, token, **options)
    try:
        await ws.send(command)
        return await read_until(ws, marker)
    finally:
        await ws.close()


async def first_frame(ws: ClientConnection, timeout: float = 10.0) -> bytes:
    async with asyncio.timeout(timeout):
        frame = await ws.recv()
    assert isinstance(frame, bytes), frame
    return frame
