"""The API-harness endpoints: ``/start`` with ``api``, ``/turn``, ``/abort``, ``/events``.

Request validation and the NDJSON streaming of ``Conversation`` lines; the harnesses
themselves are ``sdk.SdkHarness`` and ``opencode.OpencodeHarness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from . import httpio
from .conversation import Conversation, Harness, Line, Subscriber, TurnBusy
from .httpio import HTTPError, Request
from .opencode import OpencodeHarness
from .sdk import SdkHarness

API_HARNESSES = ("claude-agent-sdk", "opencode")
PING_EVERY = 15.0  # seconds of silence on a stream before a {"type": "ping"} line
FINAL = ("done", "error")


def parse_parts(value: object) -> list[dict[str, Any]]:
    """A turn's user message: a non-empty list of ``{"type": "text", "text": str}``."""
    if not isinstance(value, list) or not value:
        raise HTTPError(400, "parts must be a non-empty list")
    for part in value:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise HTTPError(400, 'each part must be {"type": "text", "text": "..."}')
        if not isinstance(part.get("text"), str):
            raise HTTPError(400, "a text part needs a string text")
    return [{"type": "text", "text": part["text"]} for part in value]


def parse_history(value: object) -> list[dict[str, Any]]:
    """``[{"role": "user"|"assistant", "parts": [...]}]``, the conversation before a restart."""
    if not isinstance(value, list) or not all(
        isinstance(m, dict)
        and m.get("role") in ("user", "assistant")
        and isinstance(m.get("parts"), list)
        for m in value
    ):
        raise HTTPError(400, 'history must be a list of {"role", "parts"}')
    return value


async def start(
    api: str, argv: list[str], env: dict[str, str], cwd: str, history: list[dict[str, Any]]
) -> Conversation:
    """Start the API harness ``api`` with ``argv``; OSError if it cannot be started."""
    harness: Harness
    if api == "claude-agent-sdk":
        harness = await SdkHarness.spawn(argv, env, cwd)
    elif api == "opencode":
        harness = await OpencodeHarness.spawn(argv, env, cwd)
    else:
        raise HTTPError(400, f"unknown api harness {api!r}; one of {', '.join(API_HARNESSES)}")
    return Conversation(harness, history)


def _line(line: Line) -> bytes:
    return httpio.chunk(json.dumps(line).encode() + b"\n")


async def _pump(
    subscriber: Subscriber,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    until_final: bool,
) -> bool:
    """Write the subscriber's lines (and pings) until a final line (``until_final``), the
    client leaves (returns False) or the subscriber was dropped for falling behind."""
    gone = asyncio.create_task(reader.read(1))  # the body is read: EOF means the client left
    try:
        while True:
            line_task = asyncio.create_task(subscriber.queue.get())
            done, _ = await asyncio.wait(
                {line_task, gone}, timeout=PING_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            if line_task not in done:
                line_task.cancel()
                if gone in done:
                    return False
                writer.write(_line({"type": "ping"}))
            else:
                line = line_task.result()
                writer.write(_line(line))
                if until_final and line["type"] in FINAL:
                    return True
            if subscriber.dropped and subscriber.queue.empty():
                writer.write(_line({"type": "error", "error": "client too slow"}))
                return True
            await writer.drain()
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await gone


async def turn(
    conversation: Conversation,
    request: Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """``POST /turn``: run one turn and stream its lines; a client that leaves aborts it."""
    parts = parse_parts(request.json_object().get("parts"))
    try:
        subscriber = conversation.begin(parts)
    except TurnBusy:
        raise HTTPError(409, "a turn is already in flight") from None
    try:
        request.streaming = True
        writer.write(httpio.response_head(200, "application/x-ndjson"))
        finished = await _pump(subscriber, reader, writer, until_final=True)
        if finished:
            writer.write(httpio.chunk(b""))
    except ConnectionError:
        finished = False
    finally:
        conversation.unsubscribe(subscriber)
    if not finished:
        await conversation.abort()


async def events(
    conversation: Conversation,
    request: Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """``GET /events``: the lines of every turn (the one in flight from its start) until the
    client leaves."""
    subscriber = conversation.subscribe()
    try:
        request.streaming = True
        writer.write(httpio.response_head(200, "application/x-ndjson"))
        if await _pump(subscriber, reader, writer, until_final=False):
            writer.write(httpio.chunk(b""))
    except ConnectionError:
        pass
    finally:
        conversation.unsubscribe(subscriber)
