"""The terminal bridge: browser or ``lap`` client ⇄ platform ⇄ the sandbox runner's PTY.

Frames pass through unchanged in both directions: the runner speaks the same
terminal protocol as the client (docs/runner-protocol.md), so the bridge adds
authentication, readiness checks and activity tracking, and nothing on the
per-keystroke path touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from websockets.exceptions import ConnectionClosed

from sandboxes.runner_client import RunnerClient, RunnerError
from sandboxes.services import session_touch
from terminals import services
from terminals.access import CLOSE_RUNNER_UNAVAILABLE, TerminalDenied, credentials_from_scope

logger = logging.getLogger(__name__)

# Activity is written at most this often (seconds): keystrokes must not each cost a DB write.
TOUCH_INTERVAL = 30.0
# Runner close codes passed on to the client as they are; anything else (the sandbox died,
# was stopped, or the runner shut down) becomes 4503. daphne can only send 1000 or 3000-4999.
FORWARDED_CLOSE_CODES = {1000, 4408, 4409}


class TerminalConsumer(AsyncWebsocketConsumer):
    # The bridge needs no channel layer: skipping it saves a layer subscription
    # (a Redis connection in production) per attached terminal.
    channel_layer_alias = None

    runner = None
    pump: asyncio.Task | None = None
    session_id: str = ""
    last_touch = 0.0

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale DB connections in a worker thread before every
        # handler; keystrokes never use the DB, so they skip that thread hop.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        # Accept first: a close before accept would be an HTTP 403 and the
        # client could not tell "bad token" (4401) from "not ready" (4409).
        await self.accept()
        try:
            target = await database_sync_to_async(services.terminal_target)(
                self.session_id, credentials_from_scope(self.scope), self.scope.get("user")
            )
            with RunnerClient(target.runner_url, target.runner_token) as client:
                self.runner = await client.connect_tty()
        except TerminalDenied as denied:
            await self.close(code=denied.code, reason=denied.reason)
            return
        except (RunnerError, OSError) as error:
            logger.warning("session %s: runner unreachable: %s", self.session_id, error)
            await self.close(code=CLOSE_RUNNER_UNAVAILABLE, reason="sandbox unreachable")
            return
        await self._touch()
        self.pump = asyncio.create_task(self._pump_runner_output())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.runner is None:
            return
        try:
            await self.runner.send(bytes_data if bytes_data is not None else text_data)
        except ConnectionClosed:
            return  # the pump sees the same close and ends the client socket
        if time.monotonic() - self.last_touch > TOUCH_INTERVAL:
            await self._touch()

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        if self.runner is not None:
            await self.runner.close()
            await self._touch()

    async def _pump_runner_output(self) -> None:
        runner = self.runner
        try:
            async for frame in runner:
                if isinstance(frame, bytes):
                    await self.send(bytes_data=frame)
                else:
                    await self.send(text_data=frame)
        except ConnectionClosed:
            pass
        code = runner.close_code
        await self.close(code=code if code in FORWARDED_CLOSE_CODES else CLOSE_RUNNER_UNAVAILABLE)

    async def _touch(self) -> None:
        self.last_touch = time.monotonic()
        await database_sync_to_async(session_touch)(self.session_id)
