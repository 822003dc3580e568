"""API harnesses: one turn at a time through a harness adapter, its events fanned out.

A ``Conversation`` owns the harness (``sdk.SdkHarness`` or ``opencode.OpencodeHarness``) of
a sandbox started with ``POST /start {"api": ...}``. ``POST /turn`` begins a turn; every line
of it — harness events, then one final ``done`` or ``error`` — goes to the caller and to every
``GET /events`` subscriber (a subscriber that joins mid-turn first gets the turn's lines so
far). Lines (``docs/runner-protocol.md``):

- ``{"type": "event", "event": {...}}`` — a harness event, opencode-shaped
  (``message.part.updated`` …);
- ``{"type": "done", "message": {"info": {...}, "parts": [...]}}`` — the assistant turn
  (``info.error`` is set when the harness ended it with an error, or it was aborted);
- ``{"type": "error", "error": "..."}`` — the turn failed without an assistant message;
- ``{"type": "ping"}`` — ``/events`` only, when nothing happened for a while.

``history`` (given at start, after a restart) is the conversation of an earlier sandbox: it
is put in front of the first turn's text until a turn reaches the harness, so the harness continues
the conversation although its own state was lost with the old sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Line = dict[str, Any]
# ``info.error`` of a turn ended by ``abort()``, as opencode writes it.
ABORTED = {"name": "MessageAbortedError", "data": {"message": "the turn was aborted"}}
SUBSCRIBER_QUEUE = 10_000  # lines an /events client may fall behind before it is dropped


class HarnessError(Exception):
    """The harness could not run the turn (it exited, refused, or was unreachable)."""


class TurnBusy(Exception):
    """A turn is already in flight."""


class Harness(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def exit_code(self) -> int | None: ...

    async def turn(self, parts: list[dict[str, Any]], emit: Callable[[Line], None]) -> Line:
        """Run one turn: ``emit`` each harness event, return ``{"info", "parts"}``.

        Raises ``HarnessError``. After ``abort()`` it returns what the turn produced so
        far, with ``info.error`` saying it was aborted.
        """
        ...

    async def abort(self) -> None: ...

    async def close(self) -> None: ...


class Subscriber:
    """One reader of the line stream: the ``/turn`` caller or an ``/events`` client."""

    def __init__(self, limit: int = 0) -> None:
        self.queue: asyncio.Queue[Line] = asyncio.Queue(limit)
        self.dropped = False

    def put(self, line: Line) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped = True


def history_preamble(history: list[dict[str, Any]]) -> str:
    """The earlier conversation as text for the harness (what it can no longer remember)."""
    turns = []
    for message in history:
        texts = [part.get("text", "") for part in message.get("parts", [])]
        text = "\n".join(t for t in texts if isinstance(t, str) and t)
        if text:
            turns.append({"role": message.get("role"), "text": text})
    return (
        "<previous_session_history>\n"
        "This session was restarted in a new sandbox: files and processes from before are "
        "gone, and this is the conversation so far.\n"
        f"<msgs>{json.dumps(turns, ensure_ascii=False)}</msgs>\n"
        "</previous_session_history>\n\n"
    )


class Conversation:
    def __init__(self, harness: Harness, history: list[dict[str, Any]]) -> None:
        self.harness = harness
        self._history = history
        self._task: asyncio.Task[None] | None = None
        self._lines: list[Line] = []  # of the turn in flight
        self._subscribers: set[Subscriber] = set()

    @property
    def busy(self) -> bool:
        return self._task is not None

    def begin(self, parts: list[dict[str, Any]]) -> Subscriber:
        """Start a turn; the returned subscriber gets its lines. ``TurnBusy`` if one runs."""
        if self._task is not None:
            raise TurnBusy
        if self._history:
            first = parts[0]
            parts = [{**first, "text": history_preamble(self._history) + first["text"]}, *parts[1:]]
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        self._lines = []
        self._task = asyncio.create_task(self._run(parts))
        return subscriber

    def subscribe(self) -> Subscriber:
        """A new ``/events`` reader; it first gets the lines of the turn in flight."""
        subscriber = Subscriber(SUBSCRIBER_QUEUE)
        for line in self._lines:
            subscriber.put(line)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def abort(self) -> bool:
        """Ask the harness to stop the turn in flight; False if there is none."""
        if self._task is None:
            return False
        await self.harness.abort()
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.harness.close()

    def _publish(self, line: Line) -> None:
        self._lines.append(line)
        for subscriber in list(self._subscribers):
            subscriber.put(line)
            if subscriber.dropped:
                self._subscribers.discard(subscriber)

    async def _run(self, parts: list[dict[str, Any]]) -> None:
        try:
            message = await self.harness.turn(parts, self._emit)
        except HarnessError as exc:
            final: Line = {"type": "error", "error": str(exc)}
        except asyncio.CancelledError:
            final = {"type": "error", "error": "the runner is shutting down"}
            raise
        except Exception:
            log.exception("turn failed")
            final = {"type": "error", "error": "internal error in the runner"}
        else:
            final = {"type": "done", "message": message}
            self._history = []  # the harness has it now
        finally:
            self._task = None
            self._publish(final)
            self._lines = []

    def _emit(self, event: Line) -> None:
        self._publish({"type": "event", "event": event})
