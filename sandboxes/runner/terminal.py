"""The harness under a PTY, shared by every attached client.

Hot path: the event loop watches the PTY master (``add_reader``); each readiness callback
reads what is there (coalescing up to ``READ_BATCH`` bytes), appends it to the scrollback
ring, the recording, and writes one frame per client. Nothing on that path parses the output
or waits for a client (see ``screen.py`` and ``ws.py`` for why).

Flow control: when every attached client is backed up, the terminal stops reading the PTY
until the first of them drains (the harness then blocks in write(), as on a real terminal),
but for at most ``MAX_PAUSE`` seconds — a client that stopped reading altogether is not
waited for; its buffer then overflows and it is dropped with 4408.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import termios
import time

from .protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, MSG_EXIT, REASON_GOING_AWAY, TERM
from .recording import Recorder
from .screen import TerminalModel
from .ws import TtyClient

log = logging.getLogger(__name__)

READ_BATCH = 256 * 1024
MAX_PENDING_INPUT = 1024 * 1024
DRAIN_TIMEOUT = 0.5  # after the harness exits, wait this long for its last output
IDLE_BEFORE_FEED = 0.1  # the model is fed only after this much quiet on the PTY
IDLE_FEED_SLICE = 2048  # bytes of pyte work per loop iteration in idle time (~4 ms)
MAX_PAUSE = 1.0  # longest wait for a backed-up client before reading the PTY again


def exit_status(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (its leader's pid).

    Killing the process group is not enough: an interactive shell puts each job in a group
    of its own, all within the session the harness was started in.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _set_controlling_tty() -> None:
    # Runs in the child after setsid(): make the PTY (stdin) its controlling terminal so job
    # control, ^C and SIGWINCH reach the harness.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The harness process and its PTY. Create with ``await Terminal.spawn(...)``."""

    def __init__(
        self,
        master_fd: int,
        process: asyncio.subprocess.Process,
        *,
        cols: int,
        rows: int,
        recorder: Recorder | None,
    ) -> None:
        self._fd = master_fd
        self.process = process
        self.size = (cols, rows)
        self.model = TerminalModel(cols, rows)
        self._recorder = recorder
        self._clients: set[TtyClient] = set()
        self._pending_input = bytearray()
        self._last_output = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        self.exit_code: int | None = None
        self._pause: asyncio.Task[None] | None = None
        self._eof = False  # every slave fd is closed: nothing more to read
        self._loop.add_reader(master_fd, self._on_readable)
        self._waiter = self._loop.create_task(self._wait())

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        cols: int,
        rows: int,
        recorder: Recorder | None = None,
    ) -> Terminal:
        """Start ``argv`` under a new PTY with exactly ``env`` plus TERM.

        Raises OSError (e.g. FileNotFoundError) if the program or ``cwd`` does not exist.
        """
        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env={**env, "TERM": TERM},
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_set_controlling_tty,  # safe: the runner starts no threads
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        if recorder:
            recorder.start(cols, rows, env)
        return cls(master, process, cols=cols, rows=rows, recorder=recorder)

    @property
    def exited(self) -> bool:
        return self._finished.is_set()

    # -- output -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        chunks = []
        size = 0
        while size < READ_BATCH:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # EIO: every slave fd is closed
                data = b""
            if not data:
                self._eof = True
                self._loop.remove_reader(self._fd)
                if self.process.returncode is not None:
                    self._finish()
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            self._broadcast(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _broadcast(self, data: bytes) -> None:
        self._last_output = time.monotonic()
        self.model.append(data)
        if self._recorder:
            self._recorder.output(data)
        for client in tuple(self._clients):
            client.send_binary(data)
            if not client.is_open:
                self._clients.discard(client)
        if self._clients and all(client.backed_up for client in self._clients):
            self._loop.remove_reader(self._fd)
            self._pause = self._loop.create_task(self._resume_when_drained(tuple(self._clients)))

    async def _resume_when_drained(self, clients: tuple[TtyClient, ...]) -> None:
        waiters = [asyncio.ensure_future(client.drained()) for client in clients]
        try:
            await asyncio.wait(waiters, timeout=MAX_PAUSE, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._resume()

    def _resume(self) -> None:
        """Read the PTY again after a pause (no-op when not paused)."""
        if self._pause is not None:
            if self._pause is not asyncio.current_task():
                self._pause.cancel()
            self._pause = None
            if not self._eof and not self.exited:
                self._loop.add_reader(self._fd, self._on_readable)

    def feed_model_when_idle(self) -> bool:
        """Give the screen model a slice of pending output if the PTY is quiet.

        Returns True if more is pending, so the caller may come back soon.
        """
        if self.model.pending and time.monotonic() - self._last_output >= IDLE_BEFORE_FEED:
            self.model.feed(IDLE_FEED_SLICE)
        return self.model.pending > 0

    def flush_recording(self) -> None:
        if self._recorder:
            self._recorder.flush()

    # -- clients --------------------------------------------------------------------------

    def attach(self, client: TtyClient) -> None:
        """Send the client the current screen, then (if still running) the live stream."""
        client.send_binary(self.model.snapshot())
        if self.exited:
            self._send_exit(client)
        elif client.is_open:
            self._clients.add(client)
            self._resume()

    def detach(self, client: TtyClient) -> None:
        self._clients.discard(client)
        self._resume()

    def write(self, client: TtyClient, data: bytes) -> None:
        """Keystrokes from ``client``; resize follows the most recent writer."""
        if self.exited:
            return
        if client.size and client.size != self.size:
            self.resize(*client.size)
        if self._pending_input:
            if len(self._pending_input) + len(data) <= MAX_PENDING_INPUT:
                self._pending_input += data
            return
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return
        if written < len(data):
            self._pending_input += data[written:]
            self._loop.add_writer(self._fd, self._write_pending)

    def _write_pending(self) -> None:
        try:
            written = os.write(self._fd, self._pending_input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending_input)
        del self._pending_input[:written]
        if not self._pending_input:
            self._loop.remove_writer(self._fd)

    def resize(self, cols: int, rows: int) -> None:
        """Resize the PTY; the foreground program gets SIGWINCH either way.

        The kernel signals a real size change itself; an unchanged size is signalled
        explicitly so a full-screen program redraws for a client that just attached.
        """
        if self.exited:
            return
        if (cols, rows) != self.size:
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self.size = (cols, rows)
            self.model.resize(cols, rows)
            if self._recorder:
                self._recorder.resize(cols, rows)
            return
        try:
            os.killpg(os.tcgetpgrp(self._fd), signal.SIGWINCH)
        except OSError:
            log.debug("could not signal the PTY's foreground process group", exc_info=True)

    # -- exit -----------------------------------------------------------------------------

    async def _wait(self) -> None:
        returncode = await self.process.wait()
        self.exit_code = exit_status(returncode)
        log.info("harness exited with %s", self.exit_code)
        # The last output may still be in the PTY; the reader calls _finish on EIO.
        self._loop.call_later(DRAIN_TIMEOUT, self._finish)
        self._on_readable()

    def _finish(self) -> None:
        if self._finished.is_set():
            return
        self._finished.set()
        if self._pause is not None:
            self._pause.cancel()
        self._loop.remove_reader(self._fd)
        if self._pending_input:
            self._loop.remove_writer(self._fd)
        os.close(self._fd)
        self.flush_recording()  # the runner closes it: a harness started again goes on in it
        for client in tuple(self._clients):
            self._send_exit(client)
        self._clients.clear()

    def _send_exit(self, client: TtyClient) -> None:
        client.send_json({"type": MSG_EXIT, "code": self.exit_code})
        client.close(CLOSE_NORMAL)

    def kill(self) -> None:
        """Kill every process of the harness's session and drop every client with 1001."""
        kill_session(self.process.pid)
        for client in tuple(self._clients):
            client.close(CLOSE_GOING_AWAY, REASON_GOING_AWAY)
        self._clients.clear()
