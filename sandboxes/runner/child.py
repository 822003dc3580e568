"""A harness process the runner started for an API harness: its exit and the tail of its output."""

from __future__ import annotations

import asyncio
import contextlib

from .terminal import exit_status, kill_session

OUTPUT_TAIL = 4096  # bytes of output kept to explain an exit


class Child:
    """Owns ``process`` (started with ``start_new_session=True``) and keeps the last bytes of
    ``output`` (its stderr, or stdout and stderr together) for error messages."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, output: asyncio.StreamReader
    ) -> None:
        self.name = name
        self.process = process
        self._tail = bytearray()
        self._pump = asyncio.create_task(self._collect(output))

    @property
    def exit_code(self) -> int | None:
        code = self.process.returncode
        return None if code is None else exit_status(code)

    def tail(self) -> str:
        return self._tail.decode("utf-8", "replace").strip()

    async def failure(self) -> str:
        """Why the process stopped answering: its exit status and last output."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._pump), 1)
        code = self.exit_code
        status = "is not answering" if code is None else f"exited with status {code}"
        tail = self.tail()
        return f"{self.name} {status}" + (f": {tail}" if tail else "")

    async def close(self) -> None:
        """Kill every process of its session and wait for it."""
        if self.process.returncode is None:
            kill_session(self.process.pid)
            await self.process.wait()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump

    async def _collect(self, output: asyncio.StreamReader) -> None:
        while data := await output.read(65536):
            self._tail += data
            del self._tail[:-OUTPUT_TAIL]
