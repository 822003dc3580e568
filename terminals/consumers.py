"""The terminal bridge: browser or ``lap`` client ⇄ platform ⇄ the sandbox runner's PTY.

Frames pass through unchanged in both directions: the runner speaks the same terminal
protocol as the client (docs/runner-protocol.md), so the bridge adds authentication,
readiness checks and activity tracking, and nothing on the per-keystroke path touches the
database.

It is a plain ASGI application rather than a Channels consumer class: the consumer's
dispatch loop creates a task and an ``asyncio.wait`` for every incoming message and closes
stale DB connections in a worker thread before each handler, which together cost a
noticeable share of a keystroke's round trip. A terminal needs none of it (no channel
layer, no handlers by message type), so the bridge reads ``receive()`` in a loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from channels.db import database_sync_to_async
from django.db import DatabaseError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sandboxes.runner.protocol import (
    CLOSE_NORMAL,
    CLOSE_NOT_STARTED,
    CLOSE_START_FAILED,
    CLOSE_TOO_SLOW,
    MAX_MESSAGE,
)
from sandboxes.runner_client import RunnerClient, RunnerError
from sandboxes.services import session_touch
from terminals import services
from terminals.access import (
    CLOSE_NOT_FOUND,
    CLOSE_RUNNER_UNAVAILABLE,
    CLOSE_TOO_BIG,
    TerminalDenied,
    credentials_from_scope,
    session_user,
)

logger = logging.getLogger(__name__)

# Activity is written at most this often (seconds): keystrokes must not each cost a DB write.
TOUCH_INTERVAL = 30.0
# Runner close codes passed on to the client as they are, with their reason; anything else
# (the sandbox died, was stopped, or the runner shut down) becomes 4503. daphne can only send
# 1000 or 3000-4999.
FORWARDED_CLOSE_CODES = {
    CLOSE_NORMAL,
    CLOSE_TOO_SLOW,
    CLOSE_NOT_STARTED,
    CLOSE_START_FAILED,
}


def in_worker_thread(func):
    """``func`` made awaitable, run in a pool thread with a database connection of its own.

    Not on the one thread that every ``thread_sensitive`` call outside a request shares: a
    query that hangs (a database cut off mid-statement) would hold every terminal's attach
    behind it. The bridge's queries are self-contained, so any thread will do.
    """
    return database_sync_to_async(func, thread_sensitive=False)


@in_worker_thread
def touch(session_id: str) -> None:
    """Record activity; a database outage must not end a terminal that needs no database."""
    try:
        session_touch(session_id)
    except DatabaseError as error:
        logger.warning("session %s: activity not recorded: %s", session_id, type(error).__name__)


async def terminal_bridge(scope: dict, receive, send) -> None:
    """ASGI app for ``WS /api/v1/managed_agents/sessions/{id}/tty``."""
    if (await receive())["type"] != "websocket.connect":
        return
    # Accept first: a close before accept would be an HTTP 403 and the client could not
    # tell "bad token" (4401) from "not ready" (4409).
    await send({"type": "websocket.accept"})
    session_id = str(scope["url_route"]["kwargs"]["session_id"])
    runner = await _connect_runner(scope, session_id, send)
    if runner is None:
        await _wait_for_disconnect(receive)
        return
    pump = asyncio.create_task(_pump_runner_output(runner, send))
    # Activity is written beside the terminal, never in its way: a database that hangs (a cut
    # connection) must hold neither the first screen nor a keystroke.
    activity = asyncio.create_task(touch(session_id))
    last_touch = time.monotonic()
    try:
        while (message := await receive())["type"] == "websocket.receive":
            data = message.get("bytes")
            frame = data if data is not None else message.get("text", "")
            if _too_big(frame):  # the runner would drop the connection without a reason
                reason = f"message too big (at most {MAX_MESSAGE} bytes)"
                await send({"type": "websocket.close", "code": CLOSE_TOO_BIG, "reason": reason})
                break
            with contextlib.suppress(ConnectionClosed):  # the pump ends the client socket
                await runner.send(frame)
            if activity.done() and time.monotonic() - last_touch > TOUCH_INTERVAL:
                activity = asyncio.create_task(touch(session_id))
                last_touch = time.monotonic()
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await runner.close()
        await touch(session_id)


def _too_big(frame: bytes | str) -> bool:
    """Over the runner's message limit (counted in bytes; a text character is up to 4)."""
    if isinstance(frame, str) and len(frame) * 4 > MAX_MESSAGE:
        return len(frame.encode()) > MAX_MESSAGE
    return len(frame) > MAX_MESSAGE


async def _connect_runner(scope: dict, session_id: str, send) -> ClientConnection | None:
    """The runner's ``/tty`` for this session, or None after closing the client with why."""
    try:
        target = await in_worker_thread(_terminal_target)(scope, session_id)
        with RunnerClient(target.runner_url, target.runner_token) as client:
            return await client.connect_tty()
    except TerminalDenied as denied:
        await send({"type": "websocket.close", "code": denied.code, "reason": denied.reason})
    except (RunnerError, OSError) as error:
        logger.warning("session %s: runner unreachable: %s", session_id, error)
        await send({"type": "websocket.close", "code": CLOSE_RUNNER_UNAVAILABLE})
    except DatabaseError as error:
        logger.warning("session %s: database unavailable: %s", session_id, type(error).__name__)
        await send({"type": "websocket.close", "code": CLOSE_RUNNER_UNAVAILABLE})
    return None


def _terminal_target(scope: dict, session_id: str) -> services.TerminalTarget:
    credentials = credentials_from_scope(scope)
    # A token attach needs no user: the cookie's user is read only when there is no token.
    user = None if credentials.token is not None else session_user(scope["session"])
    return services.terminal_target(session_id, credentials, user)


async def _pump_runner_output(runner: ClientConnection, send) -> None:
    try:
        async for frame in runner:
            if isinstance(frame, bytes):
                await send({"type": "websocket.send", "bytes": frame})
            else:
                await send({"type": "websocket.send", "text": frame})
    except ConnectionClosed:
        pass
    code = runner.close_code
    if code in FORWARDED_CLOSE_CODES:
        await send({"type": "websocket.close", "code": code, "reason": runner.close_reason or ""})
    else:
        await send({"type": "websocket.close", "code": CLOSE_RUNNER_UNAVAILABLE})


async def no_terminal(scope: dict, receive, send) -> None:
    """ASGI app for WebSocket paths that are no session's terminal: close 4404."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_NOT_FOUND, "reason": "no terminal here"})
    await _wait_for_disconnect(receive)


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass
