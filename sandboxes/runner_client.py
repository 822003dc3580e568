"""The platform's client for the in-sandbox runner (``docs/runner-protocol.md``).

No Django here: services, the terminal consumer, the drivers' ``wait_ready`` and the
benchmarks all use it. ``runner_url`` is what a driver's ``endpoints()`` returns:
``"unix:///abs/path.sock"`` or ``"http://host:port"``.

Every failure — a refused or timed-out connection, a non-2xx answer, a malformed stream —
raises ``RunnerError``; ``status`` is the HTTP status when the runner answered, else None.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect, unix_connect

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 10.0
EXEC_GRACE = 10.0  # extra read time beyond an /exec timeout before the client gives up
# /turn and /events send a ping line every 15 s: this long without a line, the runner is gone.
STREAM_READ_TIMEOUT = 60.0
TTY_MAX_MESSAGE = 16 * 1024 * 1024  # the attach snapshot can be a few hundred KiB


class RunnerError(Exception):
    """The runner could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail  # the runner's own error message, when it answered one


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, for every short-lived client here.

    httpx builds a default context for each transport it makes, loading the system CA
    store (about 45 ms), even when, as with the runner and the vault's control endpoint,
    it only ever speaks plain HTTP; a client is made per call (a warm claim makes two).
    """
    return ssl.create_default_context()


class RunnerClient:
    """Synchronous HTTP calls plus the async ``/tty`` WebSocket of one runner.

    Holds a connection pool; ``close()`` it (or use it as a context manager) when done.
    """

    def __init__(self, runner_url: str, token: str) -> None:
        if runner_url.startswith("unix://"):
            self._socket_path: str | None = runner_url.removeprefix("unix://")
            if not self._socket_path.startswith("/"):
                raise ValueError(f"unix runner URL needs an absolute path: {runner_url!r}")
            base_url = "http://runner"
            transport = httpx.HTTPTransport(uds=self._socket_path, verify=tls_context())
        elif runner_url.startswith("http://"):
            self._socket_path = None
            base_url = runner_url.rstrip("/")
            transport = httpx.HTTPTransport(verify=tls_context())
        else:
            raise ValueError(f"runner URL must be unix:///path or http://host:port: {runner_url!r}")
        self._base_url = base_url
        self._ws_url = "ws://" + base_url.removeprefix("http://") + "/tty"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            headers=self._headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        """``{"ok": True, "started": bool, "exit_code": int | None}``."""
        return self._json("GET", "/healthz")

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str = "/work",
        cols: int = 80,
        rows: int = 24,
        *,
        api: str | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Start the harness with exactly ``env``; returns ``{"pid": N}``.

        Under the PTY, or, with ``api`` (an API harness's id), as an API harness that
        ``turn`` drives; ``history`` is the conversation of an earlier sandbox. RunnerError
        with status 409 if it was already started, 400 if it cannot be run.
        """
        body: dict[str, Any] = {"argv": argv, "env": env, "cwd": cwd, "cols": cols, "rows": rows}
        if api is not None:
            body.update(api=api, history=history or [])
        return self._json("POST", "/start", json=body)

    def exec(
        self,
        argv: list[str],
        timeout: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run one command (no shell) and yield its events as they arrive.

        ``{"stream": "stdout"|"stderr", "data": str}`` events, then ``{"exit_code": N}`` —
        or ``{"exit_code": None, "error": "timeout"}`` when ``timeout`` seconds passed and the
        runner killed the command. ``env`` defaults to the harness's environment. Closing the
        iterator early disconnects, and the runner then kills the command.
        """
        body: dict[str, Any] = {"argv": argv, "timeout": timeout, "cwd": cwd}
        if env is not None:
            body["env"] = env
        read_timeout = None if timeout is None else timeout + EXEC_GRACE
        request_timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=read_timeout)
        try:
            with self._http.stream("POST", "/exec", json=body, timeout=request_timeout) as reply:
                if reply.status_code >= 300:
                    reply.read()
                    raise self._status_error(reply)
                for line in reply.iter_lines():
                    if line:
                        yield _parse_event(line)
        except httpx.HTTPError as exc:
            raise RunnerError(f"runner unreachable: {exc}") from exc

    async def turn(self, parts: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Run one turn of the API harness; yields its lines as they arrive.

        ``{"type": "event", "event": {...}}`` lines, then ``{"type": "done", "message":
        {"info", "parts"}}`` or ``{"type": "error", "error": str}`` (pings are skipped).
        Closing the iterator early disconnects, and the runner then aborts the turn.
        RunnerError with status 409 while another turn is in flight.
        """
        async for line in self._stream_lines("POST", "/turn", {"parts": parts}):
            yield line

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every line of every turn from now on (the one in flight from its start), forever."""
        async for line in self._stream_lines("GET", "/events", None):
            yield line

    def abort(self) -> bool:
        """Ask the API harness to stop the turn in flight; whether there was one."""
        return bool(self._json("POST", "/abort").get("aborted"))

    def recording(self) -> bytes | None:
        """The asciicast v2 recording of the PTY, or None if there is none."""
        reply = self._request("GET", "/recording", allow_not_found=True)
        return None if reply.status_code == 404 else reply.content

    async def connect_tty(self) -> ClientConnection:
        """Open the ``/tty`` WebSocket (binary = PTY bytes; see the protocol doc).

        Compression is off: terminal output is latency-bound, and the runner does not
        negotiate it anyway. RunnerError(status=401) for a wrong token.
        """
        options: dict[str, Any] = {
            "additional_headers": self._headers,
            "compression": None,
            "max_size": TTY_MAX_MESSAGE,
            "open_timeout": CONNECT_TIMEOUT + REQUEST_TIMEOUT,
            "ping_interval": None,
        }
        try:
            if self._socket_path is not None:
                return await unix_connect(self._socket_path, uri=self._ws_url, **options)
            return await connect(self._ws_url, **options)
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise RunnerError(f"runner refused /tty: HTTP {status}", status) from exc
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise RunnerError(f"runner unreachable: {exc}") from exc

    async def _stream_lines(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> AsyncIterator[dict[str, Any]]:
        if self._socket_path is not None:
            transport = httpx.AsyncHTTPTransport(uds=self._socket_path, verify=tls_context())
        else:
            transport = httpx.AsyncHTTPTransport(verify=tls_context())
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT)
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self._base_url,
                    transport=transport,
                    headers=self._headers,
                    timeout=timeout,
                ) as http,
                http.stream(method, path, json=body) as reply,
            ):
                if reply.status_code >= 300:
                    await reply.aread()
                    raise self._status_error(reply)
                async for raw in reply.aiter_lines():
                    if raw:
                        line = _parse_event(raw)
                        if line.get("type") != "ping":
                            yield line
        except httpx.HTTPError as exc:
            raise RunnerError(f"runner unreachable: {exc}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        reply = self._request(method, path, **kwargs)
        try:
            value = reply.json()
        except ValueError as exc:
            raise RunnerError(f"runner sent invalid JSON for {path}", reply.status_code) from exc
        if not isinstance(value, dict):
            raise RunnerError(f"runner sent a non-object for {path}", reply.status_code)
        return value

    def _request(
        self, method: str, path: str, *, allow_not_found: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RunnerError(f"runner unreachable: {exc}") from exc
        if reply.status_code >= 300 and not (allow_not_found and reply.status_code == 404):
            raise self._status_error(reply)
        return reply

    @staticmethod
    def _status_error(reply: httpx.Response) -> RunnerError:
        try:
            message = reply.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        return RunnerError(
            f"runner answered {reply.status_code} to {reply.request.url.path}: {message}",
            reply.status_code,
            str(message),
        )


def _parse_event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise RunnerError(f"runner sent a malformed line: {line[:200]!r}") from exc
    if not isinstance(event, dict):
        raise RunnerError(f"runner sent a malformed line: {line[:200]!r}")
    return event
