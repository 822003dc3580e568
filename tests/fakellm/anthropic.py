"""The Anthropic Messages API (``POST /v1/messages``) as the fake gateway speaks it.

Non-streaming answers are one ``message`` object; streaming answers are the real SSE event
sequence: ``message_start``, then per content block ``content_block_start`` /
``content_block_delta``… / ``content_block_stop``, then ``message_delta`` (stop reason,
usage) and ``message_stop``, with a ``ping`` after the first block start as the API sends.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from .script import Text, Thinking, ToolCall, Turn, chunks

Event = tuple[str, dict[str, Any]]


def _usage(body: dict[str, Any], output: int) -> dict[str, int]:
    return {
        "input_tokens": max(1, len(json.dumps(body.get("messages", []))) // 4),
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _stop_reason(turn: Turn) -> str:
    return "tool_use" if turn.calls_tools else "end_turn"


def _signature() -> str:
    return "sig_" + secrets.token_hex(16)


def _block(block: Text | Thinking | ToolCall) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": block.text}
    if isinstance(block, Thinking):
        return {"type": "thinking", "thinking": block.text, "signature": _signature()}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}


def message(turn: Turn, body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming answer."""
    return {
        "id": "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [_block(block) for block in turn.blocks],
        "stop_reason": _stop_reason(turn),
        "stop_sequence": None,
        "usage": _usage(body, max(1, len(turn.text()) // 4)),
    }


def stream(turn: Turn, body: dict[str, Any]) -> Iterator[Event]:
    """The streaming answer as ``(event name, data)`` pairs; honours ``hold`` and ``delay``."""
    start = message(turn, body)
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {**start, "content": [], "stop_reason": None, "usage": _usage(body, 1)},
        },
    )
    held = False
    for index, block in enumerate(turn.blocks):
        if isinstance(block, Text):
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in chunks(block.text)]
        elif isinstance(block, Thinking):
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in chunks(block.text)]
            deltas.append({"type": "signature_delta", "signature": _signature()})
        else:
            opening = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            arguments = json.dumps(block.input)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in chunks(arguments)]
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
        if index == 0:
            yield "ping", {"type": "ping"}
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            if turn.hold is not None and not held and isinstance(block, Text):
                held = True
                turn.hold.wait(turn.hold_timeout)
            if turn.delay:
                time.sleep(turn.delay)
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(turn), "stop_sequence": None},
            "usage": {"output_tokens": max(1, len(turn.text()) // 4)},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def error(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}


def count_tokens(body: dict[str, Any]) -> dict[str, int]:
    return {"input_tokens": _usage(body, 0)["input_tokens"]}
