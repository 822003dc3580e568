"""The Agent SDK worker: drives ``claude-agent-sdk`` for the runner, one turn per request.

Started by ``sdk.SdkHarness`` inside the sandbox (``python -m sandboxes.runner.sdk_worker``,
the SDK importable through ``PYTHONPATH``); speaks JSON lines on stdin/stdout (see ``sdk.py``).
Each turn connects a ``ClaudeSDKClient`` — the SDK's bundled ``claude`` CLI — that resumes
the previous turn's SDK session by id, so the conversation carries on from turn to turn
(the CLI keeps it under ``$HOME/.claude``). Tools are allowed inside the sandbox
(``bypassPermissions``: Bash, Edit… run as the sandbox's user in ``/work``); only
``AskUserQuestion`` is off, since nobody answers it. ``{"op": "abort"}`` interrupts the turn.

The SDK's messages become opencode-shaped events (``message.updated``,
``message.part.updated`` when a part starts or settles, ``message.part.delta`` as its text
grows, ``session.status`` ``retry`` while the CLI retries a failed model request,
``session.idle`` at the end) and one assistant message
``{"info", "parts"}`` with ``text``, ``reasoning`` and ``tool`` parts, the same shapes the
opencode harness produces. Settings come from the harness env: ``LITELLM_DEFAULT_MODEL``
(the model), ``AGENT_PROMPT`` (appended to Claude Code's system prompt); the CLI reaches the
LLM gateway through ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` (a stub) and the vault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

try:
    from claude_agent_sdk import (
        AssistantMessage,
        ClaudeAgentOptions,
        ClaudeSDKClient,
        ClaudeSDKError,
        ResultMessage,
        SystemMessage,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolUseBlock,
        UserMessage,
    )
    from claude_agent_sdk.types import StreamEvent
except ImportError as exc:  # the runner reports this as why the harness did not start
    sys.exit(
        f"claude-agent-sdk cannot be imported ({exc}; HARNESS_PYTHONPATH="
        f"{os.environ.get('HARNESS_PYTHONPATH', '')!r}): the platform host installs it with "
        "`make harnesses`"
    )

from .conversation import ABORTED

Event = dict[str, Any]
ABORT_GRACE = 15.0  # seconds an interrupted turn gets to end before it is cut off
LINE_LIMIT = 64 * 1024 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tool_output(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [block.get("text", "") for block in content if block.get("type") == "text"]
    return "\n".join(texts) if texts else json.dumps(content)


class TurnMessage:
    """The assistant message of one turn, built from SDK messages; emits every change.

    Streamed blocks (``StreamEvent``) create parts as they start and grow them by deltas;
    the complete ``AssistantMessage`` that follows settles their text (matched in order per
    API message) and each tool's input (matched by tool-use id).
    """

    def __init__(self, session_id: str, emit: Callable[[Event], None]) -> None:
        self.id = "msg_" + uuid.uuid4().hex
        self.session_id = session_id
        self._emit = emit
        self.info: dict[str, Any] = {
            "id": self.id,
            "sessionID": session_id,
            "role": "assistant",
            "time": {"created": _now_ms()},
        }
        self.parts: dict[str, dict[str, Any]] = {}
        self._api_message = ""
        self._blocks: dict[tuple[str, int], str] = {}  # (API message id, block index) → part
        self._unsettled: dict[tuple[str, str], list[str]] = {}  # (API message, type) → parts
        self._calls: dict[str, str] = {}  # tool-use id → part
        emit({"type": "message.updated", "properties": {"info": self.info}})

    def _part(self, kind: str, **fields: Any) -> dict[str, Any]:
        part_id = f"{self.id}_b{len(self.parts)}"
        part = {"id": part_id, "sessionID": self.session_id, "messageID": self.id, "type": kind}
        part.update(fields)
        self.parts[part_id] = part
        return part

    def _updated(self, part: dict[str, Any]) -> None:
        self._emit({"type": "message.part.updated", "properties": {"part": part}})

    def _delta(self, part: dict[str, Any], delta: str) -> None:
        properties = {
            "sessionID": self.session_id,
            "messageID": self.id,
            "partID": part["id"],
            "field": "text",
            "delta": delta,
        }
        self._emit({"type": "message.part.delta", "properties": properties})

    def _tool(self, call_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        part_id = self._calls.get(call_id)
        if part_id is None:
            part = self._part("tool", tool=name, callID=call_id, state={})
            self._calls[call_id] = part["id"]
        else:
            part = self.parts[part_id]
        part["state"] = {"status": "running", "input": tool_input, "time": {"start": _now_ms()}}
        return part

    def on_stream(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._api_message = str(event.get("message", {}).get("id") or uuid.uuid4().hex)
            return
        key = (self._api_message, int(event.get("index", -1)))
        if kind == "content_block_start":
            block = event.get("content_block", {})
            if block.get("type") in ("text", "thinking"):
                part_type = "text" if block["type"] == "text" else "reasoning"
                part = self._part(part_type, text="")
                self._unsettled.setdefault((self._api_message, part_type), []).append(part["id"])
            elif block.get("type") == "tool_use":
                part = self._tool(str(block.get("id")), str(block.get("name")), {})
            else:
                return
            self._blocks[key] = part["id"]
            self._updated(part)
        elif kind == "content_block_delta" and key in self._blocks:
            delta = event.get("delta", {})
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if delta.get("type") == "thinking_delta":
                text = delta.get("thinking")
            if text:
                part = self.parts[self._blocks[key]]
                part["text"] += text
                self._delta(part, text)

    def on_assistant(self, message: AssistantMessage) -> None:
        api_message = message.message_id or self._api_message
        for block in message.content:
            if isinstance(block, TextBlock | ThinkingBlock):
                part_type = "text" if isinstance(block, TextBlock) else "reasoning"
                text = block.text if isinstance(block, TextBlock) else block.thinking
                waiting = self._unsettled.get((api_message, part_type))
                part = self.parts[waiting.pop(0)] if waiting else self._part(part_type, text="")
                part["text"] = text
                self._updated(part)
            elif isinstance(block, ToolUseBlock):
                self._updated(self._tool(block.id, block.name, block.input))

    def on_user(self, message: UserMessage) -> None:
        if isinstance(message.content, str):
            return
        for block in message.content:
            if not isinstance(block, ToolResultBlock) or block.tool_use_id not in self._calls:
                continue
            part = self.parts[self._calls[block.tool_use_id]]
            state = part["state"]
            output = _tool_output(block.content)
            end = {"start": state.get("time", {}).get("start", _now_ms()), "end": _now_ms()}
            if block.is_error:
                part["state"] = {**state, "status": "error", "error": output, "time": end}
            else:
                part["state"] = {**state, "status": "completed", "output": output, "time": end}
            self._updated(part)

    def on_retry(self, data: dict[str, Any]) -> None:
        """The CLI's ``api_retry``: a model request failed and is tried again. The same event
        opencode sends, so clients can tell a turn that waits for the model from one that
        hangs."""
        status = data.get("error_status")
        error = data.get("error") or "unknown error"
        message = (
            f"the model API answered {status} ({error})"
            if status
            else f"no answer from the model API ({error})"
        )
        retry = {
            "type": "retry",
            "attempt": data.get("attempt"),
            "maxAttempts": data.get("max_retries"),
            "message": message,
            "next": _now_ms() + int(data.get("retry_delay_ms") or 0),
        }
        properties = {"sessionID": self.session_id, "status": retry}
        self._emit({"type": "session.status", "properties": properties})

    def finish(self, result: ResultMessage | None, aborted: bool) -> dict[str, Any]:
        """Close the message: usage and cost from ``result``, ``info.error`` if it failed."""
        for part in self.parts.values():
            if part["type"] == "tool" and part["state"].get("status") == "running":
                part["state"] = {**part["state"], "status": "error", "error": "interrupted"}
                self._updated(part)
        self.info["time"]["completed"] = _now_ms()
        if result is not None:
            usage = result.usage or {}
            self.info["tokens"] = {
                "input": usage.get("input_tokens", 0),
                "output": usage.get("output_tokens", 0),
                "cache": {
                    "read": usage.get("cache_read_input_tokens", 0),
                    "write": usage.get("cache_creation_input_tokens", 0),
                },
            }
            if result.total_cost_usd is not None:
                self.info["cost"] = result.total_cost_usd
        terminal = (result.terminal_reason or "") if result else ""
        if aborted or terminal.startswith("aborted"):
            self.info["error"] = ABORTED
        elif result is None or result.is_error:
            detail = (result.result or "; ".join(result.errors or [])) if result else ""
            self.info["error"] = {
                "name": "APIError",
                "data": {"message": detail or "the Agent SDK ended the turn with an error"},
            }
        self._emit({"type": "message.updated", "properties": {"info": self.info}})
        self._emit({"type": "session.idle", "properties": {"sessionID": self.session_id}})
        return {"info": self.info, "parts": list(self.parts.values())}


class Worker:
    def __init__(self, write: Callable[[Event], None]) -> None:
        self._write = write
        self.session_id: str | None = None  # the SDK session, resumed by the next turn
        self._client: ClaudeSDKClient | None = None
        self._aborted = False

    def _options(self) -> ClaudeAgentOptions:
        system_prompt: dict[str, Any] = {"type": "preset", "preset": "claude_code"}
        if os.environ.get("AGENT_PROMPT"):
            system_prompt["append"] = os.environ["AGENT_PROMPT"]
        return ClaudeAgentOptions(
            cwd=os.getcwd(),
            model=os.environ.get("LITELLM_DEFAULT_MODEL") or None,
            system_prompt=system_prompt,
            permission_mode="bypassPermissions",
            disallowed_tools=["AskUserQuestion"],
            include_partial_messages=True,
            resume=self.session_id,
            stderr=lambda line: print(line, file=sys.stderr, flush=True),
        )

    def start_turn(self, parts: list[dict[str, Any]]) -> asyncio.Task[None]:
        """Start a turn in a task. The abort flag is cleared here, not when the task first
        runs: an ``abort`` line read right behind the ``turn`` line must not be forgotten."""
        self._aborted = False
        return asyncio.create_task(self._turn(parts))

    async def _turn(self, parts: list[dict[str, Any]]) -> None:
        """Run one turn; writes its events, then ``done`` or ``error``."""
        text = "\n\n".join(part["text"] for part in parts if part.get("type") == "text")
        message = TurnMessage(self.session_id or "", self._write_event)
        result: ResultMessage | None = None
        try:
            async with ClaudeSDKClient(self._options()) as client:
                self._client = client
                if not self._aborted:
                    await client.query(text)
                    async for sdk_message in client.receive_response():
                        result = self._handle(message, sdk_message) or result
        except asyncio.CancelledError:
            if not self._aborted:
                raise
        # Every turn must be answered, whatever the SDK raised (the runner waits for it).
        except Exception as exc:
            if not self._aborted:
                self._write({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
                return
        finally:
            self._client = None
        self._write({"type": "done", "message": message.finish(result, self._aborted)})

    def _write_event(self, event: Event) -> None:
        self._write({"type": "event", "event": event})

    def _handle(self, message: TurnMessage, sdk_message: object) -> ResultMessage | None:
        if isinstance(sdk_message, StreamEvent) and sdk_message.parent_tool_use_id is None:
            message.on_stream(sdk_message.event)
        elif isinstance(sdk_message, AssistantMessage) and sdk_message.parent_tool_use_id is None:
            message.on_assistant(sdk_message)
        elif isinstance(sdk_message, UserMessage):
            message.on_user(sdk_message)
        elif isinstance(sdk_message, SystemMessage) and sdk_message.subtype == "init":
            self.session_id = sdk_message.data.get("session_id") or self.session_id
            message.session_id = message.info["sessionID"] = self.session_id or ""
        elif isinstance(sdk_message, SystemMessage) and sdk_message.subtype == "api_retry":
            message.on_retry(sdk_message.data)
        elif isinstance(sdk_message, ResultMessage):
            self.session_id = sdk_message.session_id or self.session_id
            return sdk_message
        return None

    async def abort(self) -> None:
        self._aborted = True
        if self._client is not None:
            with contextlib.suppress(ClaudeSDKError):
                await self._client.interrupt()


def _writer() -> Callable[[Event], None]:
    out = sys.stdout.buffer

    def write(line: Event) -> None:
        out.write(json.dumps(line).encode() + b"\n")
        out.flush()

    return write


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    write = _writer()
    write({"type": "ready"})
    worker = Worker(write)
    running: asyncio.Task[None] | None = None
    while raw := await reader.readline():
        request = json.loads(raw)
        if request.get("op") == "turn":
            if running is not None and not running.done():
                write({"type": "error", "error": "a turn is already in flight"})
                continue
            running = worker.start_turn(request.get("parts") or [])
        elif request.get("op") == "abort" and running is not None and not running.done():
            await worker.abort()
            loop.call_later(ABORT_GRACE, running.cancel)
    if running is not None:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def main() -> None:
    # The SDK is on PYTHONPATH for this process only: the agent's own python commands
    # (run by the CLI's Bash tool) must not pick up its packages.
    os.environ.pop("PYTHONPATH", None)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
