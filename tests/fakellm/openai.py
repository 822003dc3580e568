"""OpenAI-compatible APIs as the fake gateway speaks them.

- The Responses API (``POST /v1/responses``, what codex uses): non-streaming, a ``response``
  object; streaming, typed SSE events (``response.created``, ``response.in_progress``, per
  output item ``response.output_item.added`` … ``response.output_item.done`` with the text,
  reasoning-summary or function-call-argument deltas between, ``response.completed``), each
  with a ``sequence_number``.
- Chat Completions (``POST /v1/chat/completions``): a ``chat.completion`` object, or
  ``chat.completion.chunk`` data lines ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from .script import Text, Thinking, ToolCall, Turn, chunks

Event = tuple[str | None, dict[str, Any] | str]


def _tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("input") or body.get("messages") or "")) // 4)


def _wait(turn: Turn, state: dict[str, bool], block: object) -> None:
    if turn.hold is not None and not state["held"] and isinstance(block, Text):
        state["held"] = True
        turn.hold.wait(turn.hold_timeout)
    if turn.delay:
        time.sleep(turn.delay)


# --- Responses API -------------------------------------------------------------------


def _item(block: Text | Thinking | ToolCall, item_id: str) -> dict[str, Any]:
    if isinstance(block, Text):
        return {
            "type": "message",
            "id": item_id,
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": block.text, "annotations": []}],
        }
    if isinstance(block, Thinking):
        return {
            "type": "reasoning",
            "id": item_id,
            "summary": [{"type": "summary_text", "text": block.text}],
        }
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": block.id,
        "name": block.name,
        "arguments": json.dumps(block.input),
        "status": "completed",
    }


def _response(turn: Turn, body: dict[str, Any], response_id: str, items: list) -> dict:
    output = max(1, len(turn.text()) // 4)
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": body.get("model", ""),
        "output": items,
        "parallel_tool_calls": False,
        "usage": {
            "input_tokens": _tokens(body),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": _tokens(body) + output,
        },
    }


def response(turn: Turn, body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming Responses answer."""
    items = [_item(block, f"item_{secrets.token_hex(8)}") for block in turn.blocks]
    return _response(turn, body, "resp_" + secrets.token_hex(12), items)


def response_stream(turn: Turn, body: dict[str, Any]) -> Iterator[Event]:
    """The streaming Responses answer as ``(event type, data)`` pairs."""
    response_id = "resp_" + secrets.token_hex(12)
    sequence = iter(range(1_000_000))
    state = {"held": False}

    def event(kind: str, **data: Any) -> Event:
        return kind, {"type": kind, "sequence_number": next(sequence), **data}

    running = {**_response(turn, body, response_id, []), "status": "in_progress", "usage": None}
    yield event("response.created", response=running)
    yield event("response.in_progress", response=running)
    done_items = []
    for index, block in enumerate(turn.blocks):
        item_id = f"item_{secrets.token_hex(8)}"
        done = _item(block, item_id)
        where = {"item_id": item_id, "output_index": index}
        if isinstance(block, Text):
            opening = {**done, "status": "in_progress", "content": []}
            yield event("response.output_item.added", output_index=index, item=opening)
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", **where, content_index=0, part=part)
            for delta in chunks(block.text):
                yield event("response.output_text.delta", **where, content_index=0, delta=delta)
                _wait(turn, state, block)
            yield event("response.output_text.done", **where, content_index=0, text=block.text)
            part = done["content"][0]
            yield event("response.content_part.done", **where, content_index=0, part=part)
        elif isinstance(block, Thinking):
            yield event(
                "response.output_item.added", output_index=index, item={**done, "summary": []}
            )
            part = {"type": "summary_text", "text": ""}
            yield event(
                "response.reasoning_summary_part.added", **where, summary_index=0, part=part
            )
            for delta in chunks(block.text):
                yield event(
                    "response.reasoning_summary_text.delta", **where, summary_index=0, delta=delta
                )
                _wait(turn, state, block)
            yield event(
                "response.reasoning_summary_text.done", **where, summary_index=0, text=block.text
            )
            part = {"type": "summary_text", "text": block.text}
            yield event("response.reasoning_summary_part.done", **where, summary_index=0, part=part)
        else:
            opening = {**done, "status": "in_progress", "arguments": ""}
            yield event("response.output_item.added", output_index=index, item=opening)
            for delta in chunks(done["arguments"]):
                yield event("response.function_call_arguments.delta", **where, delta=delta)
                _wait(turn, state, block)
            yield event(
                "response.function_call_arguments.done", **where, arguments=done["arguments"]
            )
        yield event("response.output_item.done", output_index=index, item=done)
        done_items.append(done)
    yield event("response.completed", response=_response(turn, body, response_id, done_items))


# --- Chat Completions ----------------------------------------------------------------


def _tool_calls(turn: Turn) -> list[dict[str, Any]]:
    return [
        {
            "id": block.id,
            "type": "function",
            "function": {"name": block.name, "arguments": json.dumps(block.input)},
        }
        for block in turn.blocks
        if isinstance(block, ToolCall)
    ]


def _finish_reason(turn: Turn) -> str:
    return "tool_calls" if turn.calls_tools else "stop"


def _chat_usage(turn: Turn, body: dict[str, Any]) -> dict[str, int]:
    output = max(1, len(turn.text()) // 4)
    return {"prompt_tokens": _tokens(body), "completion_tokens": output, "total_tokens": output}


def chat(turn: Turn, body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming Chat Completions answer."""
    reply: dict[str, Any] = {"role": "assistant", "content": turn.text() or None}
    reasoning = "".join(b.text for b in turn.blocks if isinstance(b, Thinking))
    if reasoning:
        reply["reasoning_content"] = reasoning
    if turn.calls_tools:
        reply["tool_calls"] = _tool_calls(turn)
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": reply, "finish_reason": _finish_reason(turn)}],
        "usage": _chat_usage(turn, body),
    }


def chat_stream(turn: Turn, body: dict[str, Any]) -> Iterator[Event]:
    """The streaming Chat Completions answer: unnamed data lines, then ``[DONE]``."""
    base = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", ""),
    }
    state = {"held": False}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
        return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    for block in turn.blocks:
        if isinstance(block, Text):
            for delta in chunks(block.text):
                yield chunk({"content": delta})
                _wait(turn, state, block)
        elif isinstance(block, Thinking):
            for delta in chunks(block.text):
                yield chunk({"reasoning_content": delta})
                _wait(turn, state, block)
        else:
            call = {"index": calls, "id": block.id, "type": "function"}
            call["function"] = {"name": block.name, "arguments": json.dumps(block.input)}
            yield chunk({"tool_calls": [call]})
            calls += 1
    yield chunk({}, _finish_reason(turn))
    if (body.get("stream_options") or {}).get("include_usage"):
        yield None, {**base, "choices": [], "usage": _chat_usage(turn, body)}
    yield None, "[DONE]"


def error(text: str, code: str) -> dict[str, Any]:
    return {"error": {"message": text, "type": "invalid_request_error", "code": code}}
