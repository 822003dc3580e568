"""POST /exec: one non-interactive command, its output streamed as NDJSON events."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncGenerator, Callable

from .terminal import exit_status, kill_session

READ_SIZE = 65536


async def run(
    argv: list[str], env: dict[str, str], cwd: str | None, timeout: float | None
) -> AsyncGenerator[dict[str, object]]:
    """Run ``argv`` (no shell) and yield its events.

    Yields ``{"stream": "stdout"|"stderr", "data": str}`` as output arrives (decoded as UTF-8
    with replacement), then ``{"exit_code": N}``; on timeout every process of its session is killed
    and the last event is ``{"exit_code": None, "error": "timeout"}``. If the consumer stops
    early (the client went away) the processes are killed too. Raises OSError if the
    program or ``cwd`` cannot be used.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    events: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
    assert process.stdout is not None and process.stderr is not None
    readers = [
        asyncio.create_task(_pump(process.stdout, "stdout", events.put_nowait)),
        asyncio.create_task(_pump(process.stderr, "stderr", events.put_nowait)),
    ]
    done = asyncio.gather(*readers)
    done.add_done_callback(lambda _: events.put_nowait(None))
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    timed_out = False
    try:
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            try:
                event = await asyncio.wait_for(events.get(), remaining)
            except TimeoutError:
                timed_out = True
                break
            if event is None:
                break
            yield event
        if timed_out:
            kill_session(process.pid)
            await process.wait()
            yield {"exit_code": None, "error": "timeout"}
        else:
            yield {"exit_code": exit_status(await process.wait())}
    finally:
        if process.returncode is None:
            kill_session(process.pid)
            await process.wait()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(done, return_exceptions=True)


async def _pump(
    stream: asyncio.StreamReader, name: str, emit: Callable[[dict[str, object]], None]
) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        data = await stream.read(READ_SIZE)
        text = decoder.decode(data, final=not data)
        if text:
            emit({"stream": name, "data": text})
        if not data:
            return


def encode(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode() + b"\n"
