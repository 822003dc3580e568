"""The chat REPL for API harnesses: each line is one turn on ``POST /sessions/{id}/message_stream``.

The reply is printed as it streams. Ctrl-C during a turn aborts it (``POST /sessions/{id}/abort``)
and returns to the prompt; Ctrl-C at the prompt clears the line; Ctrl-D ends the chat and leaves
the session running."""

from __future__ import annotations

from typing import Any

from lapcli.client import Client
from lapcli.context import Environment
from lapcli.status import LapError

PROMPT = "you> "


class TextExtractor:
    """Turn stream frames into new text. Understands plain ``{"text"}``/``{"delta"}`` frames
    and the reference's ``harness_event`` frames (opencode ``message.part.updated``, whose
    ``part.text`` is the whole text so far: only the unseen suffix is returned)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def feed(self, frame: dict[str, Any]) -> str:
        kind = frame.get("type")
        if kind == "error":
            raise LapError(f"turn failed: {frame.get('message') or frame.get('error')}")
        if kind == "harness_event":
            return self._harness(frame.get("event") or {})
        for field in ("delta", "text"):
            if isinstance(frame.get(field), str) and kind not in ("ready", "done"):
                return frame[field]
        return ""

    def _harness(self, event: dict[str, Any]) -> str:
        props = event.get("properties") or {}
        part = props.get("part") or {}
        if part.get("type") != "text":
            return ""
        if isinstance(props.get("delta"), str):
            return props["delta"]
        key = str(part.get("id"))
        text = part.get("text") or ""
        new = text[self._seen.get(key, 0) :]
        self._seen[key] = len(text)
        return new


def run_turn(env: Environment, client: Client, session_id: str, text: str) -> None:
    """Send one message and print the reply as it arrives."""
    extractor = TextExtractor()
    ended_with_newline = True
    for frame in client.message_stream(session_id, text):
        if frame.get("type") == "done":
            break
        chunk = extractor.feed(frame)
        if chunk:
            env.stdout.write(chunk)
            env.stdout.flush()
            ended_with_newline = chunk.endswith("\n")
    if not ended_with_newline:
        env.stdout.write("\n")


def repl(env: Environment, client: Client, session_id: str) -> None:
    """Read lines until EOF; one turn per non-empty line."""
    print(f"chat with session {session_id} — Ctrl-C aborts a reply, Ctrl-D ends", file=env.stderr)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            print(file=env.stderr)
            break
        except KeyboardInterrupt:
            print(file=env.stderr)
            continue
        if not line.strip():
            continue
        try:
            run_turn(env, client, session_id, line)
        except KeyboardInterrupt:
            client.abort(session_id)
            print("\n[aborted]", file=env.stderr)
        except LapError as exc:
            print(exc.message, file=env.stderr)
    print(
        f"chat ended; the session keeps running (resume: lap attach {session_id})", file=env.stderr
    )
