"""The ``claude-agent-sdk`` harness: the runner's SDK worker process, JSON lines over stdio.

The worker is ``argv`` (``python3 -m sandboxes.runner.sdk_worker``: an interpreter the SDK
was installed for), run with the harness env (stubs only) and ``PYTHONPATH`` = the runner's
library directory, then ``$HARNESS_PYTHONPATH`` (where the SDK is installed, e.g. the tools
directory), then ``$PYTHONPATH``. It lives as long as the sandbox; each turn is one request
line, answered by event lines and one final line:

- runner → worker: ``{"op": "turn", "parts": [...]}``, ``{"op": "abort"}``;
- worker → runner: ``{"type": "event", "event": {...}}`` …, then
  ``{"type": "done", "message": {...}}`` or ``{"type": "error", "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .child import Child
from .conversation import HarnessError, Line

LIBRARY = str(Path(__file__).resolve().parents[2])  # the directory holding ``sandboxes``
LINE_LIMIT = 64 * 1024 * 1024  # one event may carry a large tool output
READY_TIMEOUT = 60.0  # seconds the worker gets to import the SDK and say it is ready


class SdkHarness:
    def __init__(self, child: Child) -> None:
        self.child = child
        self._lock = asyncio.Lock()

    @classmethod
    async def spawn(cls, argv: list[str], env: dict[str, str], cwd: str) -> SdkHarness:
        """Start the worker and wait for its ``{"type": "ready"}`` line (the SDK imported).

        OSError if ``argv[0]`` or ``cwd`` cannot be used, HarnessError if the worker exits
        (e.g. the SDK is not installed) or stays silent.
        """
        extra = f"{env.get('HARNESS_PYTHONPATH', '')}{os.pathsep}{env.get('PYTHONPATH', '')}"
        paths = [LIBRARY, *filter(None, extra.split(os.pathsep))]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "PYTHONPATH": os.pathsep.join(paths)},
            cwd=cwd,
            start_new_session=True,
            limit=LINE_LIMIT,
        )
        assert process.stdout is not None and process.stderr is not None
        harness = cls(Child("the Agent SDK worker", process, process.stderr))
        try:
            first = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        except TimeoutError:
            first = b""
        if first.strip() != b'{"type": "ready"}':
            message = await harness.child.failure()
            await harness.close()
            raise HarnessError(message)
        return harness

    @property
    def pid(self) -> int:
        return self.child.process.pid

    @property
    def exit_code(self) -> int | None:
        return self.child.exit_code

    async def turn(self, parts: list[dict[str, Any]], emit: Callable[[Line], None]) -> Line:
        async with self._lock:
            await self._send({"op": "turn", "parts": parts})
            stdout = self.child.process.stdout
            assert stdout is not None
            while True:
                raw = await stdout.readline()
                if not raw:
                    raise HarnessError(await self.child.failure())
                try:
                    line = json.loads(raw)
                except ValueError:
                    message = f"the SDK worker sent a malformed line: {raw[:200]!r}"
                    raise HarnessError(message) from None
                kind = line.get("type")
                if kind == "event":
                    emit(line["event"])
                elif kind == "done":
                    reply: dict[str, Any] = line["message"]
                    return reply
                elif kind == "error":
                    raise HarnessError(line.get("error") or "the Agent SDK failed")

    async def abort(self) -> None:
        with contextlib.suppress(HarnessError):
            await self._send({"op": "abort"})

    async def close(self) -> None:
        await self.child.close()

    async def _send(self, request: dict[str, Any]) -> None:
        stdin = self.child.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            await stdin.drain()
        except (ConnectionError, RuntimeError):
            raise HarnessError(await self.child.failure()) from None
