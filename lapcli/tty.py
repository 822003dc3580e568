"""Attach the local terminal to a session's PTY over WebSocket (DESIGN.md "Terminal protocol").

Guarantees of :func:`attach`:

* stdin is in raw mode only while attached and its saved termios attributes are restored on every
  exit path: normal return, exception, SIGTERM/SIGHUP/SIGINT, lost connection;
* the terminal size is sent on connect and on every SIGWINCH as ``{"type":"resize",…}``;
* a lone Ctrl-D byte (``b"\\x04"`` read on its own) detaches and leaves the session running;
* when the attach ends, the modes a full-screen program switched on in the local terminal
  (alternate screen, mouse reporting, hidden cursor, bracketed paste…) are switched off;
* a ``{"type":"exit","code":N}`` frame from the server ends the attach with exit status ``N``;
* a dropped connection is retried with exponential backoff for up to 30 s, fetching a fresh
  session (and ``tty_token``) before every try; after that :class:`ConnectionLost` is raised;
* refusals (close codes 44xx, HTTP 401/403/404 on the upgrade) raise :class:`LapError` at once;
* so does an OSError of the local stdin/stdout: only the network is retried.

Close codes are our own copy of the server's ``terminals/protocol.py`` values: lapcli may not
import platform code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from lapcli.client import Client
from lapcli.status import ApiError, ConnectionLost, ExitStatus, LapError, SessionFailed

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_NOT_READY = 4409
CLOSE_TOO_BIG = 4413
CLOSE_START_FAILED = 4500

CLOSE_MESSAGES = {
    CLOSE_UNAUTHORIZED: "the terminal refused the session token (run: lap login, then re-attach)",
    CLOSE_FORBIDDEN: "you may not attach to this session",
    CLOSE_NOT_FOUND: "the session's terminal does not exist (the session may have ended)",
    CLOSE_TOO_SLOW: "the server dropped this terminal: the connection was too slow to keep up",
    CLOSE_NOT_READY: "the session is not ready for a terminal yet (try again in a moment)",
    CLOSE_TOO_BIG: "the server refused a terminal message over 1 MiB",
    CLOSE_START_FAILED: "the session's harness exited and could not start again",
}
HANDSHAKE_MESSAGES = {
    401: CLOSE_MESSAGES[CLOSE_UNAUTHORIZED],
    403: CLOSE_MESSAGES[CLOSE_FORBIDDEN],
    404: CLOSE_MESSAGES[CLOSE_NOT_FOUND],
}

# Modes a full-screen program may have switched on in the local terminal: when the attach ends
# (a detach above all, with the program still running) they are switched off again, as tmux
# does when it detaches. Each is harmless when it was not on.
RESET_MODES = (
    b"\x1b[0m"  # colours and attributes
    b"\x1b[?25h"  # cursor shown
    b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l"  # mouse reporting
    b"\x1b[?1004l"  # focus events
    b"\x1b[?2004l"  # bracketed paste
    b"\x1b[?1l\x1b>"  # cursor keys and keypad back to normal
)
# Leaving the alternate screen also restores the saved cursor: sent only when it is on.
ALTERNATE_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"
DETACH_BYTE = b"\x04"
PING_INTERVAL = 30.0
RECONNECT_BUDGET = 30.0
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 4.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@dataclass(frozen=True)
class Outcome:
    """How an attach ended: ``detached`` (Ctrl-D), ``exited`` (the remote process ended with
    ``code``), ``closed`` (the server closed normally) or ``signal`` (we were told to stop)."""

    kind: str
    code: int = 0


class RawMode:
    """Put ``fd`` in raw mode (when it is a TTY) and restore its exact previous attributes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> RawMode:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            # A hung-up terminal cannot be restored; there is nothing left to protect then.
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on ``fd``; 80x24 when it is not a terminal."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


def resize_frame(fd: int) -> str:
    cols, rows = terminal_size(fd)
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def attach(client: Client, session_id: str) -> Outcome:
    """Attach stdin/stdout to the session's terminal until detach, exit or failure."""
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    attachment = _Attachment(client, session_id, stdin_fd, stdout_fd)
    with RawMode(stdin_fd):
        try:
            return asyncio.run(attachment.run())
        finally:
            attachment.restore_terminal()


class _Attachment:
    def __init__(self, client: Client, session_id: str, stdin_fd: int, stdout_fd: int) -> None:
        self.client = client
        self.session_id = session_id
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.lost_since: float | None = None
        self.backoff = FIRST_BACKOFF
        self.received_signal: int | None = None
        self.alternate_screen = False

    async def run(self) -> Outcome:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            self.received_signal = signum
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await self._attach_with_retries()
        except asyncio.CancelledError:
            if self.received_signal is None:
                raise
            return Outcome("signal", 128 + self.received_signal)
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    async def _attach_with_retries(self) -> Outcome:
        while True:
            session = await self._fetch_session()
            if session is not None:
                try:
                    return await self._connect(session)
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else None
                    if code in CLOSE_MESSAGES:
                        raise LapError(_close_message(exc), ExitStatus.ERROR) from None
                    if code == 1000:
                        return Outcome("closed")
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in HANDSHAKE_MESSAGES:
                        raise LapError(HANDSHAKE_MESSAGES[status], ExitStatus.AUTH) from None
                except (OSError, TimeoutError, InvalidHandshake):
                    pass  # lost or never reached: retried below, within the budget
            await self._wait_before_retry()

    async def _fetch_session(self) -> dict[str, Any] | None:
        try:
            session = await asyncio.to_thread(self.client.get_session, self.session_id)
        except (httpx.TransportError, ApiError) as exc:
            retryable = not isinstance(exc, ApiError) or exc.http_status >= 500
            if self.lost_since is None or not retryable:
                raise
            return None
        if session.get("status") in ("dead", "failed"):
            raise SessionFailed.ended(session)
        return session

    async def _wait_before_retry(self) -> None:
        now = time.monotonic()
        if self.lost_since is None:
            self.lost_since = now
            self._notice("connection lost; reconnecting…")
        remaining = RECONNECT_BUDGET - (now - self.lost_since)
        if remaining <= 0:
            raise ConnectionLost(
                f"lost the connection to {self.client.url} and could not reconnect within "
                f"{RECONNECT_BUDGET:.0f}s; re-attach later with: lap attach {self.session_id}"
            )
        await asyncio.sleep(min(self.backoff, remaining))
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def _notice(self, text: str) -> None:
        # Raw mode: the terminal does not translate \n, so write \r\n ourselves.
        os.write(sys.stderr.fileno(), f"\r\n[lap] {text}\r\n".encode())

    async def _connect(self, session: dict[str, Any]) -> Outcome:
        url = self.client.tty_url(session)
        token = session.get("tty_token") or self.client.key
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            ssl=_ssl_context(self.client.verify) if url.startswith("wss:") else None,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            open_timeout=10,
            max_size=None,
        ) as ws:
            if self.lost_since is not None:
                self._notice("reconnected")
            self.lost_since = None
            self.backoff = FIRST_BACKOFF
            return await self._pump(ws)

    async def _pump(self, ws: ClientConnection) -> Outcome:
        loop = asyncio.get_running_loop()
        outgoing: asyncio.Queue[bytes | str] = asyncio.Queue()
        detached: asyncio.Future[None] = loop.create_future()

        def on_stdin() -> None:
            try:
                data = os.read(self.stdin_fd, 65536)
            except OSError:
                data = b""
            if data in (b"", DETACH_BYTE):
                loop.remove_reader(self.stdin_fd)
                if not detached.done():
                    detached.set_result(None)
            else:
                outgoing.put_nowait(data)

        await ws.send(resize_frame(self.stdout_fd))
        with _local_terminal("read from stdin"):
            loop.add_reader(self.stdin_fd, on_stdin)
        loop.add_signal_handler(
            signal.SIGWINCH, lambda: outgoing.put_nowait(resize_frame(self.stdout_fd))
        )
        receiver = asyncio.create_task(self._receive(ws))
        sender = asyncio.create_task(_send(ws, outgoing))
        pinger = asyncio.create_task(_ping(ws))
        try:
            waiting: set[asyncio.Future[Any]] = {receiver, sender, detached}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if detached in done:
                await ws.close()
                return Outcome("detached")
            if receiver in done:
                return receiver.result()
            sender.result()
            raise AssertionError("the sender only ends by raising")
        finally:
            loop.remove_reader(self.stdin_fd)
            loop.remove_signal_handler(signal.SIGWINCH)
            for task in (receiver, sender, pinger):
                task.cancel()
            await asyncio.gather(receiver, sender, pinger, return_exceptions=True)

    async def _receive(self, ws: ClientConnection) -> Outcome:
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                self._write(message)
                continue
            control = _control(message)
            if control is None:
                self._write(message.encode())
            elif control.get("type") == "exit":
                return Outcome("exited", int(control.get("code") or 0))

    def restore_terminal(self) -> None:
        """Switch off what the remote program switched on in the local terminal."""
        if not os.isatty(self.stdout_fd):
            return
        leave = LEAVE_ALTERNATE_SCREEN if self.alternate_screen else b""
        with contextlib.suppress(OSError):
            os.write(self.stdout_fd, leave + RESET_MODES)

    def _write(self, data: bytes) -> None:
        for switch in ALTERNATE_SCREEN.finditer(data):
            self.alternate_screen = switch.group(1) == b"h"
        view = memoryview(data)
        while view:
            with _local_terminal("write to stdout"):
                written = os.write(self.stdout_fd, view)
            view = view[written:]


def _close_message(closed: ConnectionClosed) -> str:
    assert closed.rcvd is not None
    if closed.rcvd.code == CLOSE_START_FAILED and closed.rcvd.reason:
        return closed.rcvd.reason  # the runner's own words, with the error
    return CLOSE_MESSAGES[closed.rcvd.code]


@contextlib.contextmanager
def _local_terminal(action: str) -> Iterator[None]:
    """Turn an OSError of our own stdin/stdout into a :class:`LapError` that ends the attach:
    only network errors may be taken for a lost connection and retried."""
    try:
        yield
    except OSError as exc:
        raise LapError(f"cannot {action}: {exc.strerror or exc}") from None


async def _send(ws: ClientConnection, outgoing: asyncio.Queue[bytes | str]) -> None:
    while True:
        await ws.send(await outgoing.get())


async def _ping(ws: ClientConnection) -> None:
    """Application-level keep-alive (DESIGN.md), so idle proxies keep the socket open."""
    while True:
        await asyncio.sleep(PING_INTERVAL)
        await ws.send(json.dumps({"type": "ping"}))


def _control(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) and "type" in frame else None


def _ssl_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
