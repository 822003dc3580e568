"""Keystroke echo and output throughput: a bare PTY versus the runner's /tty WebSocket.

Both paths run the same programs: ``cat`` in raw mode for echo (each key goes through the
program, not just the kernel's line discipline) and ``head -c 64M /dev/zero | base64`` for
throughput. The runner path is one hop: this process -> unix socket -> runner -> PTY -> back,
with the websockets client the platform's terminal bridge uses (``RunnerClient``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from bench.report import Row, latency_rows, print_rows, scaled
from sandboxes.runner_client import RunnerClient, RunnerError

ECHO_ROUNDS = scaled(1000, 100)
WARMUP = 50
OUTPUT_BYTES = scaled(64, 8) * 1024 * 1024
END = b"END-OF-BENCH"
ECHO_PROGRAM = ["sh", "-c", "stty raw -echo; exec cat"]


def flood_program(wrap: int) -> list[str]:
    """Print base64 of OUTPUT_BYTES zeros after one line of input; ``wrap=0``: no newlines."""
    return [
        "sh",
        "-c",
        f"stty raw -echo; read _; head -c {OUTPUT_BYTES} /dev/zero | base64 -w {wrap};"
        f" printf '{END.decode()}'",
    ]


# 76-column lines: base64 writes line by line, so the PTY sees many small writes as with most
# programs; one endless line (large writes) shows what the runner itself can move.
FLOODS = {"lines": flood_program(76), "raw": flood_program(0)}
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
TOKEN = secrets.token_hex(16)


# -- bare PTY ---------------------------------------------------------------------------


def _spawn_bare(argv: list[str]) -> tuple[int, subprocess.Popen[bytes]]:
    master, slave = os.openpty()
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=ENV, start_new_session=True
    )
    os.close(slave)
    return master, process


def _read_until(fd: int, needle: bytes, buf: bytes = b"") -> bytes:
    while needle not in buf[-(len(needle) + 65536) :]:
        select.select([fd], [], [])
        buf += os.read(fd, 65536)
    return buf


def bare_echo() -> list[float]:
    fd, process = _spawn_bare(ECHO_PROGRAM)
    time.sleep(0.2)  # let stty run before the first key
    samples = []
    try:
        for i in range(WARMUP + ECHO_ROUNDS):
            started = time.perf_counter()
            os.write(fd, b"x")
            got = b""
            while not got:
                select.select([fd], [], [])
                got = os.read(fd, 1024)
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
    finally:
        process.kill()
        process.wait()
        os.close(fd)
    return samples


def bare_throughput(program: list[str] = FLOODS["lines"]) -> float:
    fd, process = _spawn_bare(program)
    time.sleep(0.2)
    total = 0
    tail = b""
    try:
        started = time.perf_counter()
        os.write(fd, b"\n")
        while END not in tail:
            select.select([fd], [], [])
            data = os.read(fd, 65536)
            total += len(data)
            tail = tail[-len(END) :] + data
        elapsed = time.perf_counter() - started
    finally:
        process.kill()
        process.wait()
        os.close(fd)
    return total / elapsed / 1e6


# -- through the runner -------------------------------------------------------------------


class _Runner:
    def __init__(self, directory: Path) -> None:
        socket_path = directory / "runner.sock"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandboxes.runner", "--listen", f"unix:{socket_path}"],
            env={**os.environ, "LAP_RUNNER_TOKEN": TOKEN},
            stderr=subprocess.DEVNULL,
        )
        self.client = RunnerClient(f"unix://{socket_path}", TOKEN)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.health()
                break
            except RunnerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


async def ws_echo(ws: ClientConnection) -> list[float]:
    """Round trips of single keystrokes through a terminal WebSocket whose program echoes."""
    samples = []
    for i in range(WARMUP + ECHO_ROUNDS):
        started = time.perf_counter()
        await ws.send(b"x")
        await ws.recv()
        if i >= WARMUP:
            samples.append(time.perf_counter() - started)
    return samples


async def ws_throughput(ws: ClientConnection, trigger: bytes) -> float:
    """MB/s of output after sending ``trigger``, until the END marker arrives."""
    total = 0
    tail = b""
    started = time.perf_counter()
    await ws.send(trigger)
    while END not in tail:
        data = await ws.recv()
        if isinstance(data, bytes):
            total += len(data)
            tail = tail[-len(END) :] + data
    return total / (time.perf_counter() - started) / 1e6


async def runner_echo(runner: _Runner) -> list[float]:
    runner.client.start(ECHO_PROGRAM, ENV, cwd="/")
    ws = await runner.client.connect_tty()
    await ws.recv()  # the attach snapshot
    await asyncio.sleep(0.2)
    samples = await ws_echo(ws)
    await ws.close()
    return samples


async def runner_throughput(runner: _Runner, program: list[str]) -> float:
    runner.client.start(program, ENV, cwd="/")
    ws = await runner.client.connect_tty()
    await ws.recv()
    await asyncio.sleep(0.2)
    mbps = await ws_throughput(ws, b"\n")
    await ws.close()
    return mbps


def _through_runner() -> tuple[list[float], dict[str, float]]:
    directory = Path(tempfile.mkdtemp(prefix="lap-bench-", dir="/tmp"))
    runners: list[_Runner] = []
    try:
        for name in ("echo", *FLOODS):
            (directory / name).mkdir()
            runners.append(_Runner(directory / name))
        echo = asyncio.run(runner_echo(runners[0]))
        throughput = {
            name: asyncio.run(runner_throughput(runner, program))
            for runner, (name, program) in zip(runners[1:], FLOODS.items(), strict=True)
        }
    finally:
        for runner in runners:
            runner.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return echo, throughput


def throughput_rows(name: str, measured: dict[str, float], bare: dict[str, float]) -> list[Row]:
    """MB/s rows for the 76-column-lines and one-line floods against the bare PTY's."""
    return [
        Row(f"{name} output, {label}", measured[flood], "MB/s", bare[flood], "bare PTY", target)
        for flood, label, target in (
            ("lines", "76-col lines", ""),
            ("raw", "one line", "≥ 60 MB/s" if "chain" in name else ""),
        )
    ]


def bare_pty() -> tuple[list[float], dict[str, float]]:
    """Echo samples and MB/s of the bare PTY, the terminal rows' baseline."""
    return bare_echo(), {name: bare_throughput(program) for name, program in FLOODS.items()}


def measure() -> list[Row]:
    bare_samples, bare_mbps = bare_pty()
    echo, mbps = _through_runner()
    return [
        *latency_rows("terminal echo, runner hop", echo, bare_samples, "bare PTY"),
        *throughput_rows("terminal runner hop", mbps, bare_mbps),
    ]


def main() -> None:
    print_rows(
        f"terminal_runner: this process → runner /tty (unix socket) → PTY; echo n={ECHO_ROUNDS}"
        f" through raw-mode cat; base64 of {OUTPUT_BYTES >> 20} MiB",
        measure(),
    )


if __name__ == "__main__":
    main()
