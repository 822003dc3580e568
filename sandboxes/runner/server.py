"""The runner's HTTP + WebSocket server: routing, authentication, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import execute, httpio, relay, turns
from .conversation import Conversation, HarnessError
from .httpio import HTTPError, Request
from .protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NOT_STARTED,
    CLOSE_START_FAILED,
    MAX_SIZE,
    REASON_GOING_AWAY,
    REASON_NOT_STARTED,
    REASON_START_FAILED,
)
from .recording import Recorder
from .terminal import Terminal
from .ws import TtyClient

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between housekeeping rounds when nothing is pending
FLUSH_EVERY = 0.5  # seconds between recording flushes
SHUTDOWN_GRACE = 1.0  # seconds clients get to complete their close handshake on SIGTERM
DISCARD_LIMIT = 16 * 1024 * 1024  # bytes of a rejected body read and dropped before closing

Handler = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Config:
    listen: str  # "unix:PATH" or "tcp:HOST:PORT"
    token: str
    relays: list[str] = field(default_factory=list)  # "HOST:PORT=unix:PATH"
    recording: str | None = None
    recording_max_bytes: int | None = None


def _string_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HTTPError(400, f"{name} must be a non-empty list of strings")
    return value


def _string_dict(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise HTTPError(400, f"{name} must be an object of strings")
    return value


def _optional_string(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise HTTPError(400, f"{name} must be a string")
    return value


def _dimension(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise HTTPError(400, f"{name} must be an integer from 1 to {MAX_SIZE}")
    return value


class Runner:
    """State shared by all connections: the harness (a terminal, or an API harness's
    conversation), its env, the recording."""

    def __init__(self, token: str, recorder: Recorder | None) -> None:
        self._token = token.encode()
        self._recorder = recorder
        self.terminal: Terminal | None = None
        self.conversation: Conversation | None = None
        self._starting = False
        self._argv: list[str] = []
        self._env: dict[str, str] = {}
        self._cwd: str | None = None
        self._start_again_lock = asyncio.Lock()
        self._shutting_down = False
        self._connections: set[asyncio.Task[None]] = set()
        self._routes: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self._healthz},
            "/start": {"POST": self._start},
            "/exec": {"POST": self._exec},
            "/recording": {"GET": self._recording},
            "/turn": {"POST": self._turn},
            "/abort": {"POST": self._abort},
            "/events": {"GET": self._events},
        }

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (one request, or one WebSocket)."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("request failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await httpio.read_head(reader)
            if not self._authorized(request.headers):
                raise HTTPError(401, "missing or wrong runner token")
            if request.path == "/tty":
                if request.method != "GET" or not request.is_websocket:
                    raise HTTPError(400, "/tty takes a WebSocket upgrade")
                await self._tty(request, reader, writer)
                return
            methods = self._routes.get(request.path)
            if methods is None:
                raise HTTPError(404, f"no endpoint {request.path}")
            handler = methods.get(request.method)
            if handler is None:
                raise HTTPError(405, f"{request.path} takes {', '.join(methods)}")
            await httpio.read_body(reader, request)
            try:
                await handler(request, reader, writer)
            except (HTTPError, ConnectionError):
                raise
            except Exception:
                if request.streaming:  # the head is out: all we can do is cut the stream
                    raise
                log.exception("%s %s failed", request.method, request.path)
                raise HTTPError(500, "internal error") from None
        except HTTPError as exc:
            writer.write(httpio.json_response(exc.status, {"error": exc.message}))
            await writer.drain()
            # Read what the client is still sending, so closing does not reset the
            # connection before it has read the answer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(DISCARD_LIMIT), 1.0)
        else:
            await writer.drain()

    @property
    def _started(self) -> bool:
        return self.terminal is not None or self.conversation is not None

    async def _healthz(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        harness = self.terminal or (self.conversation.harness if self.conversation else None)
        writer.write(
            httpio.json_response(
                200,
                {
                    "ok": True,
                    "started": self._started,
                    "exit_code": harness.exit_code if harness else None,
                    "turn": self.conversation is not None and self.conversation.busy,
                },
            )
        )

    async def _start(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = request.json_object()
        api = _optional_string(body.get("api"), "api")
        argv = _string_list(body.get("argv"), "argv")
        env = _string_dict(body.get("env", {}), "env")
        cwd = _optional_string(body.get("cwd", "/work"), "cwd") or "/work"
        cols = _dimension(body.get("cols", 80), "cols")
        rows = _dimension(body.get("rows", 24), "rows")
        history = turns.parse_history(body.get("history", []))
        if self._started or self._starting:
            raise HTTPError(409, "the harness was already started")
        self._starting = True
        try:
            if api:
                self.conversation = await turns.start(api, argv, env, cwd, history)
                pid = self.conversation.harness.pid
            else:
                self.terminal = await Terminal.spawn(argv, env, cwd, cols, rows, self._recorder)
                pid = self.terminal.process.pid
        except OSError as exc:
            raise HTTPError(400, f"cannot start {argv[0]!r} in {cwd!r}: {exc.strerror}") from None
        except HarnessError as exc:
            raise HTTPError(400, f"the harness did not start: {exc}") from None
        finally:
            self._starting = False
        self._argv, self._env, self._cwd = argv, env, cwd
        log.info("harness started: pid %s", pid)
        writer.write(httpio.json_response(200, {"pid": pid}))

    async def _exec(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = request.json_object()
        argv = _string_list(body.get("argv"), "argv")
        cwd = _optional_string(body.get("cwd"), "cwd") or self._cwd
        env = _string_dict(body["env"], "env") if "env" in body else self._env
        timeout = body.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise HTTPError(400, "timeout must be a positive number of seconds")
        events = execute.run(argv, env, cwd, timeout)
        try:
            try:
                first = await anext(events)
            except OSError as exc:
                raise HTTPError(400, f"cannot run {argv[0]!r}: {exc.strerror}") from None
            request.streaming = True
            writer.write(httpio.response_head(200, "application/x-ndjson"))
            writer.write(httpio.chunk(execute.encode(first)))
            async for event in events:
                writer.write(httpio.chunk(execute.encode(event)))
                await writer.drain()
            writer.write(httpio.chunk(b""))
        finally:
            await events.aclose()

    async def _recording(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        data = self._recorder.read() if self._recorder else None
        if data is None:
            raise HTTPError(404, "no recording")
        writer.write(httpio.response(200, data, "application/x-asciicast"))

    def _api_conversation(self) -> Conversation:
        if self.conversation is None:
            started = "runs in a terminal" if self.terminal else "was not started"
            raise HTTPError(409, f"no API harness: the harness {started}")
        return self.conversation

    async def _turn(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await turns.turn(self._api_conversation(), request, reader, writer)

    async def _abort(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        aborted = await self._api_conversation().abort()
        writer.write(httpio.json_response(200, {"aborted": aborted}))

    async def _events(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await turns.events(self._api_conversation(), request, reader, writer)

    async def _tty(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = TtyClient(reader, writer)
        if not client.handshake(request.head):
            return
        if self._shutting_down:  # no harness may start again now
            await _refuse(client, CLOSE_GOING_AWAY, REASON_GOING_AWAY)
            return
        if self.terminal is None:
            await _refuse(client, CLOSE_NOT_STARTED, REASON_NOT_STARTED)
            return
        try:
            terminal = await self._running_terminal()
        except OSError as exc:
            await _refuse(client, CLOSE_START_FAILED, f"{REASON_START_FAILED}: {exc.strerror}")
            return
        terminal.attach(client)
        try:
            await client.serve(terminal.write, lambda c, cols, rows: terminal.resize(cols, rows))
        finally:
            terminal.detach(client)

    async def _running_terminal(self) -> Terminal:
        """The terminal a new client attaches to. A harness that exited is started again, with
        the argv, env and cwd of ``/start`` at the last size, as the reference platform's
        ``tmux new-session -A`` does: ``/work`` is kept, and the recording goes on.

        Raises OSError if it cannot start (e.g. its cwd was removed).
        """
        async with self._start_again_lock:  # two clients attaching at once start one harness
            terminal = self.terminal
            assert terminal is not None and self._cwd is not None
            if terminal.exited:
                exit_code = terminal.exit_code
                terminal = await Terminal.spawn(
                    self._argv, self._env, self._cwd, *terminal.size, recorder=self._recorder
                )
                self.terminal = terminal
                log.info(
                    "harness exited with %s earlier; a client attached: started again, pid %s",
                    exit_code,
                    terminal.process.pid,
                )
            return terminal

    async def housekeeping(self) -> None:
        """Feed the screen model in idle time and flush the recording, forever."""
        last_flush = time.monotonic()
        while True:
            more = False
            terminal = self.terminal
            if terminal is not None:
                more = terminal.feed_model_when_idle()
                if time.monotonic() - last_flush >= FLUSH_EVERY:
                    terminal.flush_recording()
                    last_flush = time.monotonic()
            await asyncio.sleep(0.005 if more else TICK)

    async def shutdown(self) -> None:
        """Kill the harness's process group, close clients with 1001, stop running commands."""
        self._shutting_down = True
        if self.terminal is not None:
            self.terminal.kill()
        if self.conversation is not None:
            await self.conversation.close()
        pending = set(self._connections)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        if self._recorder:
            self._recorder.close()


async def _refuse(client: TtyClient, code: int, reason: str) -> None:
    """Close a /tty client that cannot attach, then serve it until its close completes."""
    client.close(code, reason)
    await client.serve(lambda c, d: None, lambda c, w, h: None)


def _use_pidfd_child_watcher() -> None:
    # Python 3.11 waits for children with a thread per process by default; the runner wants
    # no threads, because it forks the harness with a preexec_fn. 3.12 uses pidfds already.
    if sys.version_info >= (3, 12):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


async def _listen(runner: Runner, listen: str) -> tuple[asyncio.Server, str]:
    kind, _, address = listen.partition(":")
    if kind == "unix" and address:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address).st_mode):
                os.unlink(address)
        server = await asyncio.start_unix_server(
            runner.handle, address, limit=httpio.MAX_HEAD_BYTES
        )
        return server, f"unix:{address}"
    host, _, port = address.rpartition(":")
    if kind == "tcp" and host and port.isdigit():
        server = await asyncio.start_server(
            runner.handle, host.strip("[]"), int(port), limit=httpio.MAX_HEAD_BYTES
        )
        bound = server.sockets[0].getsockname()
        return server, f"tcp:{host}:{bound[1]}"
    raise ValueError(f"--listen wants unix:PATH or tcp:HOST:PORT, got {listen!r}")


async def serve(config: Config) -> None:
    """Run the runner until SIGTERM or SIGINT."""
    _use_pidfd_child_watcher()
    recorder = None
    if config.recording:
        recorder = Recorder(config.recording)
        if config.recording_max_bytes is not None:
            recorder.max_bytes = config.recording_max_bytes
    runner = Runner(config.token, recorder)
    server, where = await _listen(runner, config.listen)
    relays = []
    for spec in config.relays:
        host, port, path = relay.parse(spec)
        relays.append(await relay.serve(host, port, path))
        log.info("relaying tcp:%s:%s to unix:%s", host, port, path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    housekeeping = loop.create_task(runner.housekeeping())
    log.info("listening on %s", where)
    await stop.wait()
    log.info("shutting down")
    housekeeping.cancel()
    for listener in (server, *relays):
        listener.close()
    await runner.shutdown()
    if where.startswith("unix:"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where.removeprefix("unix:"))
