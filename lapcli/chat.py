"""The chat REPL for API harnesses: each line is one turn on ``POST /sessions/{id}/message_stream``.

The reply is printed as it streams. Ctrl-C during a turn aborts it (``POST /sessions/{id}/abort``)
and returns to the prompt; Ctrl-C at the prompt clears the line; Ctrl-D ends the chat and leaves
the session running."""

from __future__ import annotations

from typing import Any

from lapcli.client import Client
from lapcli.context import Environment
from lapcli.status import ApiError, LapError

PROMPT = "you> "


class TextExtractor:
    """Turn stream frames into new reply text.

    Understands the platform's frames (``ready``, ``harness_event``, ``done``, ``error``) with
    opencode-shaped harness events: ``message.part.updated`` carries a whole part (its text
    so far: only the unseen suffix is returned), ``message.part.delta`` the text added to a
    part (only for ``text`` parts: reasoning is not printed). The ``done`` frame's message
    fills in whatever the events did not show. Plain ``{"text"}``/``{"delta"}`` frames too.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._types: dict[str, str] = {}  # part id → part type

    def feed(self, frame: dict[str, Any]) -> str:
        kind = frame.get("type")
        if kind == "error":
            raise LapError(f"turn failed: {frame.get('message') or frame.get('error')}")
        if kind == "harness_event":
            return self._harness(frame.get("event") or {})
        if kind == "done":
            message = frame.get("message")
            parts = message.get("parts") if isinstance(message, dict) else None
            return "".join(self._whole(part) for part in parts or [] if isinstance(part, dict))
        for field in ("delta", "text"):
            if isinstance(text := frame.get(field), str) and kind != "ready":
                return text
        return ""

    def _harness(self, event: dict[str, Any]) -> str:
        props = event.get("properties") or {}
        if event.get("type") == "message.part.delta":
            key = str(props.get("partID"))
            delta = props.get("delta")
            if self._types.get(key) != "text" or not isinstance(delta, str):
                return ""
            self._seen[key] = self._seen.get(key, 0) + len(delta)
            return delta
        part = props.get("part") or {}
        if isinstance(delta := props.get("delta"), str) and part.get("type") == "text":
            return delta
        return self._whole(part)

    def _whole(self, part: dict[str, Any]) -> str:
        key = str(part.get("id"))
        self._types[key] = str(part.get("type"))
        if part.get("type") != "text":
            return ""
        text = part.get("text") or ""
        new = text[self._seen.get(key, 0) :]
        self._seen[key] = max(self._seen.get(key, 0), len(text))
        return new


def _turn_error(frame: dict[str, Any]) -> str | None:
    """Why a ``done`` turn did not complete (aborted, or the harness's error), if it did not."""
    message = frame.get("message")
    info = message.get("info") if isinstance(message, dict) else None
    error = info.get("error") if isinstance(info, dict) else None
    if not error:
        return None
    if not isinstance(error, dict):
        return str(error)
    if error.get("name") == "MessageAbortedError":
        return "aborted"
    data = error.get("data")
    detail = data.get("message") if isinstance(data, dict) else None
    return f"error: {detail or error.get('name') or 'the turn failed'}"


def _retry_notice(frame: dict[str, Any]) -> str | None:
    """The notice for a harness's ``session.status`` ``retry`` event (a model request failed
    and is tried again), so a turn that waits for the model does not look hung."""
    event = frame.get("event") if frame.get("type") == "harness_event" else None
    if not isinstance(event, dict) or event.get("type") != "session.status":
        return None
    status = (event.get("properties") or {}).get("status")
    if not isinstance(status, dict) or status.get("type") != "retry":
        return None
    attempt, most = status.get("attempt"), status.get("maxAttempts")
    count = f"attempt {attempt} of {most}" if most else f"attempt {attempt}"
    return f"[model request failed, retrying ({count}): {status.get('message') or 'no reason'}]"


def run_turn(env: Environment, client: Client, session_id: str, text: str) -> None:
    """Send one message and print the reply as it arrives."""
    extractor = TextExtractor()
    ended_with_newline = True
    problem = None
    for frame in client.message_stream(session_id, text):
        if notice := _retry_notice(frame):
            if not ended_with_newline:
                env.stdout.write("\n")
                ended_with_newline = True
            env.stdout.flush()
            print(notice, file=env.stderr)
            continue
        chunk = extractor.feed(frame)
        if chunk:
            env.stdout.write(chunk)
            env.stdout.flush()
            ended_with_newline = chunk.endswith("\n")
        if frame.get("type") == "done":
            problem = _turn_error(frame)
            break
    if not ended_with_newline:
        env.stdout.write("\n")
    if problem:
        print(f"[{problem}]", file=env.stderr)


def print_history(env: Environment, client: Client, session_id: str) -> None:
    """The conversation so far, as the chat showed it, so re-attaching picks up where it was.
    A platform without the conversation log (404) has nothing to show."""
    try:
        log = client.messages(session_id)
    except ApiError as error:
        if error.http_status != 404:
            raise
        return
    for entry in log:
        info = entry.get("info") or {}
        text = TextExtractor().feed({"type": "done", "message": entry})  # its text parts
        if info.get("role") == "user":
            env.stdout.write(f"{PROMPT}{text}\n")
            continue
        if text:
            env.stdout.write(text if text.endswith("\n") else text + "\n")
        if problem := _turn_error({"message": entry}):
            print(f"[{problem}]", file=env.stderr)
    env.stdout.flush()


def repl(env: Environment, client: Client, session_id: str) -> None:
    """Show the conversation so far, then read lines until EOF; one turn per non-empty line."""
    print(f"chat with session {session_id} — Ctrl-C aborts a reply, Ctrl-D ends", file=env.stderr)
    print_history(env, client, session_id)
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
