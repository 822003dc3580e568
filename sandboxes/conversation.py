"""Conversations with API harnesses: turns, their durable log, abort, the event tail.

A turn (``POST /sessions/{id}/message`` or ``message_stream``, or the session's
``initial_prompt``) claims the session's one turn slot (``Session.turn_started_at``, a
compare-and-set), writes the user message ``pending`` and runs on the sandbox's runner
(``/turn``, docs/runner-protocol.md) in a task of the event loop, so that it reaches its end
and is recorded even when the client that asked for it goes away. At the end the user message
is completed and the assistant message appended (``failed`` when the harness ended the turn
with an error or it was aborted), or, when the turn could not run, the user message is failed
with the reason. The turn's frames (the Server-Sent Events' payloads):

- ``{"type": "ready"}``, then ``{"type": "harness_event", "event": {...}}`` as the harness
  works (opencode-shaped events: ``message.part.updated``, ``message.part.delta`` …);
- last, ``{"type": "done", "message": {"info", "parts"}}`` or ``{"type": "error",
  "message": "..."}`` (with ``"code": "too_large"`` when the sandbox refused the message's
  size).

Nothing here holds a database connection while it waits on the sandbox: database work runs
in short calls that give their connection back (``_db``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.utils import timezone

from lapsite.errors import Conflict, LapError, TooLarge, Unavailable
from sandboxes import messages, services
from sandboxes.limits import MESSAGE_MAX_BYTES, require_at_most, runner_refusal
from sandboxes.models import Session, SessionMessage
from sandboxes.registry import runner_client
from sandboxes.runner_client import RunnerError

logger = logging.getLogger(__name__)

TURN_TIMEOUT = 30 * 60  # seconds a turn may run before it is aborted
EVENTS_TIMEOUT = 30 * 60  # seconds a /events stream stays open
STALE_TURN = 60  # seconds after which a turn slot the runner does not know of is taken over
FINAL = ("done", "error")
ABORTED = "MessageAbortedError"

Frame = dict[str, Any]


class HarnessFailed(LapError):
    """The harness could not run the turn (it failed, or the sandbox went away)."""

    status = 502
    code = "harness_failed"
    default_message = "the harness could not run the turn"


@dataclass(frozen=True)
class Turn:
    """A claimed turn: what ``turn_begin`` recorded, and where it runs."""

    session_id: uuid.UUID
    started_at: datetime  # the value of Session.turn_started_at this turn holds
    message_id: int  # the pending user message
    parts: list[dict[str, Any]]
    runner_url: str
    runner_token: str


# --- reading -------------------------------------------------------------------------


def require_api_harness(session: Session) -> None:
    """``Conflict`` (409, ``tui_session``) unless the session runs an API harness."""
    if session.supports_tui:
        attach = f"lap attach {session.id}, or the WebSocket at the session's tty_url"
        if session.status not in Session.LIVE:  # its terminal is gone too
            attach = f"after POST /sessions/{session.id}/restart brings it back: {attach}"
        raise Conflict(
            f"session {session.id} runs the terminal harness {session.harness_id!r}, which "
            f"takes no messages: attach to its terminal instead ({attach})",
            code="tui_session",
        )


def message_as_api(message: SessionMessage) -> dict[str, Any]:
    """A log row as ``{"info", "parts"}``: the harness's info plus role, status and seq."""
    info = {**message.info, "role": message.role, "status": message.status, "seq": message.seq}
    times = {"created": int(message.created_at.timestamp() * 1000)}
    if message.completed_at is not None:
        times["completed"] = int(message.completed_at.timestamp() * 1000)
    info.setdefault("time", times)
    return {"info": info, "parts": message.parts}


def conversation_log(session: Session) -> list[dict[str, Any]]:
    """Every message of the session, oldest first (a turn in flight: its user message
    ``pending``)."""
    return [message_as_api(message) for message in session.messages.order_by("seq")]


# --- a turn ----------------------------------------------------------------------------


def turn_begin(session: Session, parts: list[dict[str, Any]]) -> Turn:
    """Claim the session's turn slot and record the user message as ``pending``.

    ``TooLarge`` for parts with more than ``MESSAGE_MAX_BYTES`` of text. ``Conflict`` for a
    terminal session (``tui_session``), a session that is not ready (``not_ready``) or one
    whose turn is in flight (``turn_in_flight``). A slot left by a turn that can no longer
    finish (the platform stopped mid-turn) is taken over, and that turn's user message failed.
    """
    texts = (part["text"] for part in parts)
    require_at_most("the message", texts, MESSAGE_MAX_BYTES, "bytes of text (UTF-8)")
    require_api_harness(session)
    runner_url, token = services.session_runner(session)
    now = timezone.now()
    claimed = Session.objects.filter(pk=session.pk, status=Session.Status.READY)
    if not claimed.filter(turn_started_at__isnull=True).update(turn_started_at=now):
        held = Session.objects.filter(pk=session.pk).values_list("turn_started_at", flat=True)
        previous = held.first()
        if previous is None or not _slot_is_stale(previous, runner_url, token):
            raise Conflict(
                "a turn is in flight on this session: wait for it to end, or abort it "
                f"(POST /sessions/{session.id}/abort)",
                code="turn_in_flight",
            )
        if not claimed.filter(turn_started_at=previous).update(turn_started_at=now):
            raise Conflict("another turn claimed the session first", code="turn_in_flight")
    for stale in session.messages.filter(status=SessionMessage.Status.PENDING):
        messages.session_message_fail(stale, "the turn was lost")
    message = messages.session_message_append(session, role=SessionMessage.Role.USER, parts=parts)
    services.session_touch(session.id)
    return Turn(session.id, now, message.pk, parts, runner_url, token)


def _slot_is_stale(started: datetime, runner_url: str, token: str) -> bool:
    age = timezone.now() - started
    if age > timedelta(seconds=TURN_TIMEOUT + STALE_TURN):
        return True
    if age < timedelta(seconds=STALE_TURN):
        return False
    client = runner_client(runner_url, token)
    try:
        return not client.health().get("turn")
    except RunnerError:
        return False
    finally:
        client.close()


def _turn_finish(turn: Turn, final: dict[str, Any]) -> Frame:
    """Record how the turn ended, free the slot; the last frame."""
    session = Session.objects.filter(pk=turn.session_id).first()
    user = SessionMessage.objects.filter(pk=turn.message_id).first()
    if session is None or user is None:  # deleted with its agent meanwhile
        return {"type": "error", "message": "the session was deleted"}
    if final["type"] == "done":
        message = final["message"]
        info = message.get("info") or {}
        messages.session_message_finish(user, status=SessionMessage.Status.COMPLETE)
        messages.session_message_append(
            session,
            role=SessionMessage.Role.ASSISTANT,
            parts=message.get("parts") or [],
            status=SessionMessage.Status.FAILED
            if info.get("error")
            else SessionMessage.Status.COMPLETE,
            info=info,
        )
        frame: Frame = {"type": "done", "message": message}
    else:
        messages.session_message_fail(user, final["error"])
        frame = {"type": "error", "message": final["error"]}
        if "code" in final:
            frame["code"] = final["code"]
    Session.objects.filter(pk=turn.session_id, turn_started_at=turn.started_at).update(
        turn_started_at=None
    )
    services.session_touch(turn.session_id)
    return frame


def _runner_failure(error: RunnerError) -> str:
    if error.status == 409:
        return "the harness is still busy with an earlier turn: abort it, or restart the session"
    if error.status == 413:
        return runner_refusal("message")
    return f"the sandbox is unreachable: {error}"


async def _drive(turn: Turn, emit: Callable[[Frame], None]) -> None:
    """Run ``turn`` on the runner to its end, emitting frames; always emits a last one."""
    frame: Frame = {"type": "error", "message": "internal error"}
    try:
        final = await _run_on_runner(turn, emit)
        frame = await _db(_turn_finish)(turn, final)
    # Whatever went wrong, the listener must get a last frame rather than hang.
    except Exception:
        logger.exception("turn %s of session %s failed", turn.message_id, turn.session_id)
    finally:
        emit(frame)


async def _run_on_runner(turn: Turn, emit: Callable[[Frame], None]) -> dict[str, Any]:
    client = runner_client(turn.runner_url, turn.runner_token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TURN_TIMEOUT
    try:
        async with contextlib.aclosing(client.turn(turn.parts)) as lines:
            while True:
                try:
                    line = await asyncio.wait_for(anext(lines), deadline - loop.time())
                except StopAsyncIteration:
                    return {"type": "error", "error": "the sandbox ended the turn without a result"}
                if line.get("type") == "event":
                    emit({"type": "harness_event", "event": line.get("event")})
                elif line.get("type") in FINAL:
                    return line
    except TimeoutError:
        await sync_to_async(_abort_quietly, thread_sensitive=False)(client)
        return {"type": "error", "error": f"the turn ran over {TURN_TIMEOUT}s and was aborted"}
    except RunnerError as error:
        failure = {"type": "error", "error": _runner_failure(error)}
        if error.status == 413:
            failure["code"] = TooLarge.code
        return failure
    finally:
        client.close()


def _abort_quietly(client: Any) -> None:
    with contextlib.suppress(RunnerError):
        client.abort()


_running: set[asyncio.Task[None]] = set()  # turns in flight in this process (strong refs)


def _launch(turn: Turn) -> asyncio.Queue[Frame]:
    """Start ``turn`` in a task of the running loop; its frames arrive on the queue."""
    frames: asyncio.Queue[Frame] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(_drive(turn, frames.put_nowait))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return frames


async def turn_frames(turn: Turn) -> AsyncIterator[Frame]:
    """The turn's frames: ``ready``, harness events, then ``done`` or ``error``. The turn
    runs on if the iterator is dropped early."""
    frames = _launch(turn)
    yield {"type": "ready"}
    while True:
        frame = await frames.get()
        yield frame
        if frame["type"] in FINAL:
            return


async def _turn_last_frame(turn: Turn) -> Frame:
    async for frame in turn_frames(turn):
        if frame["type"] in FINAL:
            return frame
    raise AssertionError("turn_frames ends with a final frame")


def turn_run(turn: Turn) -> dict[str, Any]:
    """Run the turn to its end (blocking); the assistant message ``{"info", "parts"}``.

    ``HarnessFailed`` (502) when the turn could not run, ``TooLarge`` (413) when the sandbox
    refused the message's size.
    """
    frame = async_to_sync(_turn_last_frame)(turn)
    if frame["type"] == "error" and frame.get("code") == TooLarge.code:
        raise TooLarge(frame["message"])
    if frame["type"] == "error":
        raise HarnessFailed(frame["message"])
    return frame["message"]


def turn_abort(session: Session) -> bool:
    """Ask the harness to stop the turn in flight; whether there was one.

    ``Conflict`` for a terminal or not-ready session, ``Unavailable`` if the sandbox does not
    answer. The turn then ends (``done``, with ``info.error`` = ``MessageAbortedError``).
    """
    require_api_harness(session)
    runner_url, token = services.session_runner(session)
    client = runner_client(runner_url, token)
    try:
        return client.abort()
    except RunnerError as error:
        raise Unavailable("the sandbox is unreachable") from error
    finally:
        client.close()


def first_turn(session_id: str | uuid.UUID) -> None:
    """Run a ready API session's ``initial_prompt`` as its first turn; idempotent (a session
    that has messages already is left alone). A failure is in the log, like any turn's."""
    session = Session.objects.filter(pk=session_id, status=Session.Status.READY).first()
    if session is None or not session.initial_prompt or session.messages.exists():
        return
    try:
        turn = turn_begin(session, [{"type": "text", "text": session.initial_prompt}])
    except Conflict as error:
        logger.warning("initial prompt of session %s not run: %s", session_id, error.message)
        return
    with contextlib.suppress(HarnessFailed):
        turn_run(turn)


# --- the event tail ---------------------------------------------------------------------


def events_source(session: Session) -> tuple[str, str]:
    """Where ``session_events`` reads from; ``Conflict`` unless a ready API session."""
    require_api_harness(session)
    return services.session_runner(session)


async def session_events(
    session_id: uuid.UUID, runner_url: str, token: str, *, follow: bool
) -> AsyncIterator[Frame]:
    """``ready``, then the frames of the turn in flight (from its start) or of the next one,
    until it ends — or of every turn while ``follow``; at most ``EVENTS_TIMEOUT``.

    When the sandbox's stream ends early because the session was stopped, restarted or
    deleted meanwhile, the last frame is an ``error`` saying so rather than why the sandbox
    could no longer be read.
    """
    yield {"type": "ready"}
    client = runner_client(runner_url, token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTS_TIMEOUT
    try:
        async with contextlib.aclosing(client.events()) as lines:
            while True:
                line = await asyncio.wait_for(anext(lines), deadline - loop.time())
                if line.get("type") == "event":
                    yield {"type": "harness_event", "event": line.get("event")}
                elif line.get("type") == "done":
                    yield {"type": "done", "message": line.get("message")}
                elif line.get("type") == "error":
                    yield {"type": "error", "message": line.get("error")}
                if line.get("type") in FINAL and not follow:
                    return
    except TimeoutError:
        return
    except StopAsyncIteration:
        if ended := await _db(_session_ended)(session_id):
            yield {"type": "error", "message": ended}
    except RunnerError as error:
        ended = await _db(_session_ended)(session_id)
        yield {"type": "error", "message": ended or _runner_failure(error)}
    finally:
        client.close()


def _session_ended(session_id: uuid.UUID) -> str | None:
    """Why the session no longer has the sandbox it had when ready; None while it is ready."""
    session = Session.objects.filter(pk=session_id).only("status", "failure_reason").first()
    if session is None:
        return "the session was deleted"
    if session.status == Session.Status.READY:
        return None
    if session.status == Session.Status.CREATING:
        return "the session was restarted"
    reason = session.failure_reason
    return f"the session was stopped: {reason}" if reason else "the session was stopped"


# --- the database from async code --------------------------------------------------------


def release_connections() -> None:
    """Give this thread's database connections back (outside transactions), so a long
    stream does not hold one."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def _db[T](function: Callable[..., T]) -> Callable[..., Any]:
    """``function`` as a coroutine on a worker thread that gives its connection back."""

    def call(*args: Any) -> T:
        try:
            return function(*args)
        finally:
            release_connections()

    return sync_to_async(call, thread_sensitive=False)
