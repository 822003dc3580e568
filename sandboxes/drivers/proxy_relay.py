"""The local driver's proxy relay: a jail's ``/run/lap/proxy.sock`` to its vault sidecar.

mitmproxy listens on TCP only, so the sidecar of each sandbox binds an ephemeral port on
127.0.0.1 and writes it to its ready file. This relay (asyncio, stdlib only, run under the
sidecar's uid, outside the jail) serves the unix socket the jail sees as ``/run/lap/proxy.sock``
and splices each connection to that port. It proves to the sidecar that a connection came
through the jail's socket: into the first request head of every connection it puts
``Proxy-Authorization: Basic <lap:per-sandbox secret>`` (dropping any the agent sent), so
other local users who find the loopback port are refused by the sidecar's proxy auth. A
CONNECT authenticates its whole tunnel; a plain-HTTP request gets ``Connection: close``, so
each such request arrives on a new, freshly authenticated connection.

Run as ``python proxy_relay.py --fd N --ready-file PATH --auth-file PATH [--watch-pid PID]
[--stop-pid PID:START]``: the listening socket is inherited as fd ``N``; with ``--watch-pid``
the relay exits when that process (the jail) exits, first killing ``--stop-pid`` (the
sidecar) if it is still the process that started at ``START``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("lap.relay")

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
CHUNK = 64 * 1024
AUTH_HEADER = b"proxy-authorization:"
HOP_HEADERS = (b"proxy-connection:", b"connection:", b"keep-alive:")


def rewrite_head(head: bytes, authorization: bytes) -> bytes:
    """The first request head with our proxy credentials (and ``Connection: close`` unless
    it is a CONNECT); ``head`` ends with the blank line."""
    lines = head[:-4].split(b"\r\n")
    method = lines[0].split(b" ", 1)[0].upper()
    keep = [line for line in lines[1:] if line and not line.lower().startswith(AUTH_HEADER)]
    if method != b"CONNECT":
        keep = [line for line in keep if not line.lower().startswith(HOP_HEADERS)]
        keep.append(b"Connection: close")
    keep.append(b"Proxy-Authorization: " + authorization)
    return b"\r\n".join([lines[0], *keep]) + b"\r\n\r\n"


class Relay:
    def __init__(self, ready_file: Path, secret: bytes) -> None:
        self.ready_file = ready_file
        self.authorization = b"Basic " + base64.b64encode(b"lap:" + secret)
        self._address: tuple[str, int] | None = None

    async def address(self) -> tuple[str, int]:
        """The sidecar's ``(host, port)``, waiting for its ready file on first use and again
        after the sidecar stopped answering (a restarted one writes a new file)."""
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while self._address is None:
            with contextlib.suppress(OSError, ValueError):
                host, _, port = self.ready_file.read_text().strip().rpartition(":")
                self._address = (host.strip("[]"), int(port))
                break
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError("the vault sidecar is not listening")
            await asyncio.sleep(0.05)
        return self._address

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    *await self.address()
                )
            except OSError:
                # The sidecar died; a restarted one listens on a new port (a new ready file).
                self._address = None
                raise
            upstream_writer.write(rewrite_head(head, self.authorization))
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


def _stop(spec: str | None) -> None:
    if not spec:
        return
    pid, _, start = spec.partition(":")
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[19] == start:
            os.kill(int(pid), signal.SIGKILL)


async def serve(sock: socket.socket, relay: Relay, watch_pid: int | None) -> None:
    """Serve the relay on a listening unix socket until ``watch_pid`` exits (or forever)."""
    server = await asyncio.start_unix_server(relay.handle, sock=sock, limit=MAX_HEAD)
    async with server:
        if watch_pid is None:
            await server.serve_forever()
            return
        gone = asyncio.Event()
        pidfd = os.pidfd_open(watch_pid)
        asyncio.get_running_loop().add_reader(pidfd, gone.set)
        try:
            await gone.wait()
        finally:
            asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--ready-file", required=True, help="the sidecar's HOST:PORT file")
    parser.add_argument("--auth-file", required=True, help="the proxy-auth secret")
    parser.add_argument("--watch-pid", type=int, help="exit when this process exits")
    parser.add_argument("--stop-pid", help="PID:START to kill on exit (the sidecar)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s relay %(message)s"
    )
    relay = Relay(Path(args.ready_file), Path(args.auth_file).read_bytes().strip())
    sock = socket.socket(fileno=args.fd)
    try:
        asyncio.run(serve(sock, relay, args.watch_pid))
    finally:
        _stop(args.stop_pid)


if __name__ == "__main__":
    main()
