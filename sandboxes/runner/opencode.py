"""The ``opencode`` harness: ``opencode serve`` inside the sandbox, one opencode session.

The runner starts the given argv (``opencode serve --hostname 127.0.0.1 --port N``; its
provider, model and permissions come from the ``opencode.json`` the platform wrote) and, at
the first turn, waits for it to listen and creates the session. A turn subscribes to
``GET /event``, sends ``POST /session/{id}/message`` (which answers when the turn is over)
and relays the session's events meanwhile — minus the echo of the user's own message. opencode
stores every model step as an assistant message of its own, so the turn's answer merges the
assistant messages that reply to this user message: their parts in order, the last one's
``info`` with tokens and cost summed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from . import loopback
from .child import Child
from .conversation import ABORTED, HarnessError, Line

STARTUP_TIMEOUT = 120.0  # seconds opencode gets to start listening
# An early request can hang while opencode is still starting (not just be refused): retry it.
ATTEMPT_TIMEOUT = 3.0
IDLE_GRACE = 5.0  # seconds to wait for the closing events after the reply
EXIT_GRACE = 2.0  # seconds to see whether a failed request means opencode exited
DEFAULT_PORT = 4096


def harness_port(argv: list[str], env: dict[str, str]) -> int:
    """The port opencode listens on: ``--port N`` / ``--port=N``, else ``$PORT``, else 4096."""
    for index, arg in enumerate(argv):
        if arg == "--port" and index + 1 < len(argv) and argv[index + 1].isdigit():
            return int(argv[index + 1])
        if arg.startswith("--port=") and arg[7:].isdigit():
            return int(arg[7:])
    port = env.get("PORT", "")
    return int(port) if port.isdigit() else DEFAULT_PORT


class OpencodeHarness:
    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port
        self.session_id: str | None = None
        self._setup = asyncio.Lock()
        self._aborted = False

    @classmethod
    async def spawn(cls, argv: list[str], env: dict[str, str], cwd: str) -> OpencodeHarness:
        """Start ``opencode serve``; OSError if ``argv[0]`` or ``cwd`` cannot be used."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        assert process.stdout is not None
        return cls(Child("opencode", process, process.stdout), harness_port(argv, env))

    @property
    def pid(self) -> int:
        return self.child.process.pid

    @property
    def exit_code(self) -> int | None:
        return self.child.exit_code

    async def _session(self) -> str:
        """The opencode session, created once opencode listens."""
        async with self._setup:
            if self.session_id is not None:
                return self.session_id
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STARTUP_TIMEOUT
            while True:
                if self.child.exit_code is not None:
                    raise HarnessError(await self.child.failure())
                try:
                    create = loopback.request(self.port, "POST", "/session", {"title": "lap"})
                    session = await asyncio.wait_for(create, ATTEMPT_TIMEOUT)
                    break
                except (OSError, TimeoutError):
                    if loop.time() > deadline:
                        raise HarnessError(
                            f"opencode did not listen on port {self.port} within "
                            f"{STARTUP_TIMEOUT:g}s: {self.child.tail()}"
                        ) from None
                    await asyncio.sleep(0.1)
                except loopback.LoopbackError as exc:
                    raise HarnessError(f"opencode refused to create a session: {exc}") from None
            self.session_id = str(session["id"])
            return self.session_id

    async def turn(self, parts: list[dict[str, Any]], emit: Callable[[Line], None]) -> Line:
        self._aborted = False
        session_id = await self._session()
        connected = asyncio.Event()
        idle = asyncio.Event()
        relay = asyncio.create_task(self._relay(session_id, emit, connected, idle))
        try:
            listening = asyncio.create_task(connected.wait())
            await asyncio.wait([relay, listening], return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if relay.done():
                relay.result()  # raises why the event stream ended before it began
                raise HarnessError("opencode closed its event stream")
            reply = await loopback.request(
                self.port, "POST", f"/session/{session_id}/message", {"parts": parts}
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), IDLE_GRACE)
            messages = await loopback.request(self.port, "GET", f"/session/{session_id}/message")
        except (OSError, loopback.LoopbackError) as exc:
            # A dead opencode is the likely cause: give it a moment to be reaped, then say so.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.child.process.wait(), EXIT_GRACE)
            if self.child.exit_code is not None:
                raise HarnessError(await self.child.failure()) from None
            raise HarnessError(f"opencode: {exc}") from None
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, loopback.LoopbackError):
                await relay
        merged = merge_reply(reply, messages)
        if self._aborted and not merged["info"].get("error"):
            # opencode leaves no error on a turn aborted before the model answered (while it
            # waited to retry a failed request): it would read as an empty reply.
            merged["info"] = {**merged["info"], "error": ABORTED}
        return merged

    async def _relay(
        self,
        session_id: str,
        emit: Callable[[Line], None],
        connected: asyncio.Event,
        idle: asyncio.Event,
    ) -> None:
        user_messages: set[str] = set()
        async for event in loopback.events(self.port, "/event"):
            connected.set()
            properties = event.get("properties") or {}
            if properties.get("sessionID") != session_id:
                continue
            info = properties.get("info") or {}
            if event.get("type") == "message.updated" and info.get("role") == "user":
                if isinstance(message_id := info.get("id"), str):
                    user_messages.add(message_id)
                continue
            part = properties.get("part") or {}
            if (part.get("messageID") or properties.get("messageID")) in user_messages:
                continue
            emit(event)
            if event.get("type") == "session.idle":
                idle.set()

    async def abort(self) -> None:
        self._aborted = True
        if self.session_id is None:
            return
        with contextlib.suppress(OSError, loopback.LoopbackError):
            await loopback.request(self.port, "POST", f"/session/{self.session_id}/abort")

    async def close(self) -> None:
        await self.child.close()


def merge_reply(reply: dict[str, Any], messages: list[dict[str, Any]]) -> Line:
    """One assistant turn from opencode's per-step messages answering the same user message."""
    parent = reply["info"].get("parentID")
    steps = [
        message
        for message in messages or []
        if message["info"].get("role") == "assistant" and message["info"].get("parentID") == parent
    ]
    if not parent or not steps:
        return reply
    info = dict(steps[-1]["info"])
    info["cost"] = sum(step["info"].get("cost") or 0 for step in steps)
    totals: dict[str, Any] = {}
    for step in steps:
        for name, value in (step["info"].get("tokens") or {}).items():
            if isinstance(value, dict):
                inner = totals.setdefault(name, {})
                for key, count in value.items():
                    inner[key] = inner.get(key, 0) + count
            else:
                totals[name] = totals.get(name, 0) + value
    info["tokens"] = totals
    return {"info": info, "parts": [part for step in steps for part in step["parts"]]}
