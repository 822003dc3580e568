"""``--relay HOST:PORT=unix:PATH``: a loopback TCP listener forwarding to a unix socket.

The local driver's jail has no network, yet its harness must reach the vault proxy through
``HTTPS_PROXY=http://127.0.0.1:3128``. The proxy's unix socket is bind-mounted into the jail
and this relay bridges the two, byte for byte in both directions.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def parse(spec: str) -> tuple[str, int, str]:
    """``"127.0.0.1:3128=unix:/run/lap/proxy.sock"`` -> ``("127.0.0.1", 3128, "/run/...")``."""
    address, sep, target = spec.partition("=")
    host, _, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not target.startswith("unix:"):
        raise ValueError(f"--relay wants HOST:PORT=unix:PATH, got {spec!r}")
    return host, int(port), target.removeprefix("unix:")


async def serve(host: str, port: int, socket_path: str) -> asyncio.Server:
    """Start listening; each accepted connection is piped to a new unix connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
        except OSError as exc:
            log.warning("relay to %s failed: %s", socket_path, exc)
            writer.close()
            return
        await splice(reader, writer, upstream_reader, upstream_writer)

    return await asyncio.start_server(handle, host, port)


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    other_reader: asyncio.StreamReader,
    other_writer: asyncio.StreamWriter,
) -> None:
    """Pipe two connections into each other until both directions end, then close both."""
    try:
        await asyncio.gather(_pipe(reader, other_writer), _pipe(other_reader, writer))
    finally:
        writer.close()
        other_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (so request/response protocols work).

    A broken connection closes the other side's transport, which ends the opposite pipe too.
    """
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
