"""The real runner as a subprocess on a short-lived unix socket, and helpers to talk to it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sandboxes.runner_client import RunnerClient

REPO = Path(__file__).resolve().parents[3]
TOKEN = "runner-test-token-7c1e"
SHELL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "PS1": "$ ", "LANG": "C.UTF-8"}
SHELL = ["bash", "--norc", "--noprofile", "-i"]


@dataclass
class RunningRunner:
    process: subprocess.Popen[bytes]
    url: str
    directory: Path
    client: RunnerClient
    stderr_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def start_shell(self, cols: int = 80, rows: int = 24) -> int:
        return self.client.start(SHELL, SHELL_ENV, cwd=str(self.directory), cols=cols, rows=rows)[
            "pid"
        ]

    def terminate(self, timeout: float = 5.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def launch(
    directory: Path,
    *args: str,
    listen: str | None = None,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> RunningRunner:
    """Start ``python -m sandboxes.runner`` and wait until /healthz answers."""
    socket_path = directory / "runner.sock"
    listen = listen or f"unix:{socket_path}"
    stderr_path = directory / "runner.log"
    process_env = {**(env or os.environ), "LAP_RUNNER_TOKEN": TOKEN}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [python, "-m", "sandboxes.runner", "--listen", listen, *args],
            cwd=REPO,
            env=process_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 10
    url = None
    while url is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"runner did not come up:\n{stderr_path.read_text()}")
        for line in stderr_path.read_text().splitlines():
            if "listening on " in line:
                where = line.split("listening on ", 1)[1]
                url = (
                    f"unix://{where.removeprefix('unix:')}"
                    if where.startswith("unix:")
                    else f"http://{where.removeprefix('tcp:')}"
                )
        time.sleep(0.02)
    client = RunnerClient(url, TOKEN)
    assert client.health()["ok"] is True
    return RunningRunner(process, url, directory, client, stderr_path)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not tmp_path: unix socket paths must stay under ~100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="lap-runner-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_runner(workdir: Path) -> Iterator[object]:
    """``start_runner(*args, listen=None)`` launches a runner; all are stopped afterwards."""
    runners: list[RunningRunner] = []

    def start(*args: str, **kwargs: object) -> RunningRunner:
        runner = launch(workdir, *args, **kwargs)  # type: ignore[arg-type]
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.client.close()
        runner.terminate()


@pytest.fixture
def runner(start_runner) -> RunningRunner:
    return start_runner()


async def read_until(
    ws: ClientConnection, needle: bytes, timeout: float = 5.0, buf: bytes = b""
) -> bytes:
    """Collect binary frames until ``needle`` appears; returns everything collected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    collected = bytearray(buf)
    found = needle in collected
    while not found:
        try:
            frame = await asyncio.wait_for(ws.recv(), deadline - loop.time())
        except TimeoutError:
            tail = bytes(collected[-500:])
            raise AssertionError(f"{needle!r} not seen in {timeout}s; got {tail!r}") from None
        if isinstance(frame, bytes):
            # Search only the new part (plus an overlap): outputs can be tens of megabytes.
            start = max(0, len(collected) - len(needle))
            collected += frame
            found = collected.find(needle, start) >= 0
    return bytes(collected)


async def read_quiet(ws: ClientConnection, quiet: float = 0.3) -> bytes:
    """Collect binary frames until none arrives for ``quiet`` seconds."""
    buf = b""
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), quiet)
        except TimeoutError:
            return buf
        if isinstance(frame, bytes):
            buf += frame


async def drain_until_closed(ws: ClientConnection, timeout: float = 15.0) -> ConnectionClosed:
    """Read (and drop) everything until the connection closes; the close exception."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("unreachable")


def resize_message(cols: int, rows: int) -> str:
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


def is_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
