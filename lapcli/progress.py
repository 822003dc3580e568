"""Waiting for a session to come up: poll ``GET /sessions/{id}`` and show the phases.

On a TTY a rich spinner shows the current phase and the elapsed time; otherwise one plain line
is printed per phase change (logs and CI stay readable)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.status import Status

from lapcli.client import Client
from lapcli.context import Environment
from lapcli.status import ApiError, LapError, SessionFailed

TRANSIENT_HTTP = {502, 503, 504}
MAX_POLL_ERRORS = 5
MAX_POLL_INTERVAL = 1.0  # start at Environment.poll_interval, slow down to once a second


class _Lines:
    def __init__(self, env: Environment) -> None:
        self._env = env
        self._last: str | None = None

    def show(self, phase: str, detail: str, elapsed: float) -> None:
        line = f"{phase}: {detail}" if detail else phase
        if line != self._last:
            self._last = line
            print(f"  {line} ({elapsed:.1f}s)", file=self._env.stderr, flush=True)

    def close(self) -> None:
        """Nothing to tear down for plain lines."""


class _Spinner:
    def __init__(self, env: Environment) -> None:
        self._status = Status("starting", console=Console(file=env.stderr), spinner="dots")
        self._status.start()

    def show(self, phase: str, detail: str, elapsed: float) -> None:
        text = f"{phase} [dim]{detail}[/dim]" if detail else phase
        self._status.update(f"{text} [dim]{elapsed:.1f}s[/dim]")

    def close(self) -> None:
        self._status.stop()


def wait_ready(
    env: Environment, client: Client, session: dict[str, Any], timeout: float = 600.0
) -> dict[str, Any]:
    """Poll (every 0.25 s at first, slowing to 1 s) until the session is ``ready`` and return
    it. Raises :class:`SessionFailed` when it fails or dies (with the server's
    ``failure_reason``) and :class:`LapError` on timeout."""
    session_id = session["id"]
    started = time.monotonic()
    reporter = _Spinner(env) if env.is_stderr_tty else _Lines(env)
    errors = 0
    delay = env.poll_interval
    try:
        while True:
            elapsed = time.monotonic() - started
            status = session.get("status") or "creating"
            if status == "ready":
                break  # said once, below
            reporter.show(
                session.get("phase") or status, session.get("phase_detail") or "", elapsed
            )
            if status in ("failed", "dead"):
                raise SessionFailed.ended(session)
            if elapsed > timeout:
                raise LapError(f"session {session_id} is still {status} after {timeout:.0f}s")
            env.sleep(delay)
            delay = min(delay * 1.5, MAX_POLL_INTERVAL)
            try:
                session = client.get_session(session_id)
                errors = 0
            except (httpx.TransportError, ApiError) as exc:
                transient = not isinstance(exc, ApiError) or exc.http_status in TRANSIENT_HTTP
                errors += 1
                if not transient or errors >= MAX_POLL_ERRORS:
                    raise
    finally:
        reporter.close()
    print(f"ready after {time.monotonic() - started:.1f}s", file=env.stderr, flush=True)
    return session
