"""The whole terminal chain on the real platform (issue 3's targets), with 1 and with many
terminals attached at once.

Client → daphne (the terminal bridge) → runner in a bwrap jail → PTY → back: keystroke echo
RTT and output throughput, beside a bare PTY measured in the same run, and the CPU time each
process on the path (the client, daphne, the runner) spends per echo: their sum is close to
the round trip, so the echo is their work done one after another. Then ``TERMINALS``
terminals at once (``MANY_SESSIONS`` sessions, the rest of the terminals attached to them as
extra clients, which see every byte too): each session floods ``MANY_OUTPUT`` bytes to all
of its clients at the same moment, then one client per session measures echo while every
other client keeps reading. Session start (cold and warm) is ``bench/warm_pool.py``.
"""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import ClientConnection, connect

from bench.processes import command_line, cpu_seconds, descendants
from bench.report import Row, latency_rows, print_rows, scaled
from bench.terminal_runner import (
    ECHO_ROUNDS,
    END,
    OUTPUT_BYTES,
    WARMUP,
    bare_pty,
    throughput_rows,
    ws_echo,
    ws_throughput,
)
from bench.warm_pool import fill_pool
from tests.live import LivePlatform
from tests.reliability.local_sandboxes import sandbox_of

TERMINALS = scaled(100, 20)
MANY_SESSIONS = scaled(20, 4)
MANY_OUTPUT = scaled(4, 1) * 1024 * 1024
MANY_ECHO_ROUNDS = scaled(200, 50)


async def _attach(platform: LivePlatform, session: dict) -> ClientConnection:
    ws = await connect(
        platform.tty_url(session),
        additional_headers={"Authorization": f"Bearer {session['tty_token']}"},
        max_size=None,
        compression=None,
    )
    await ws.recv()  # the attach snapshot
    return ws


async def _run_in_shell(ws: ClientConnection, command: str, marker: bytes) -> None:
    """Type ``command`` into the session's bash and wait until ``marker`` is printed."""
    await ws.send(command.encode() + b"\n")
    seen = b""
    while marker not in seen:
        frame = await ws.recv()
        seen = seen[-4096:] + (frame if isinstance(frame, bytes) else b"")


def _echo_processes(platform: LivePlatform, session_id: str) -> dict[str, set[int]]:
    """The processes a keystroke's echo passes through besides the client and ``cat``."""
    assert platform.process is not None
    _, meta = sandbox_of(platform, session_id)
    return {
        "daphne": {p for p in descendants(platform.process.pid) if "daphne" in command_line(p)},
        "runner": {
            p for p in descendants(meta["jail_pid"]) if "sandboxes.runner" in command_line(p)
        },
    }


async def chain_echo(platform: LivePlatform, agent: str) -> tuple[list[float], dict[str, float]]:
    """Echo round trips, and each process's CPU time per echo (ms): the client's, daphne's
    and the runner's."""
    session = platform.ready_session(agent)
    processes = _echo_processes(platform, session["id"])
    ws = await _attach(platform, session)
    await _run_in_shell(ws, "echo READY-$((1+1)); stty raw -echo; exec cat", b"READY-2")
    await asyncio.sleep(0.2)
    before = {name: cpu_seconds(pids) for name, pids in processes.items()}
    client_before = time.process_time()
    samples = await ws_echo(ws)
    rounds = WARMUP + len(samples)
    cpu = {
        name: (cpu_seconds(pids) - before[name]) / rounds * 1e3 for name, pids in processes.items()
    }
    cpu["client"] = (time.process_time() - client_before) / rounds * 1e3
    await ws.close()
    return samples, cpu


def _flood(size: int, wrap: int) -> bytes:
    return f"head -c {size} /dev/zero | base64 -w {wrap}; printf '{END.decode()}'\n".encode()


async def chain_throughput(platform: LivePlatform, agent: str, wrap: int) -> float:
    ws = await _attach(platform, platform.ready_session(agent))
    await _run_in_shell(ws, "stty -echo; echo GO-$((2+2))", b"GO-4")
    mbps = await ws_throughput(ws, _flood(OUTPUT_BYTES, wrap))
    await ws.close()
    return mbps


async def _read_until_end(ws: ClientConnection) -> tuple[int, float]:
    """Bytes read until the END marker, and when the marker arrived."""
    total, tail = 0, b""
    while END not in tail:
        data = await ws.recv()
        if isinstance(data, bytes):
            total += len(data)
            tail = tail[-len(END) :] + data
    return total, time.perf_counter()


async def _drain(ws: ClientConnection) -> None:
    """Keep reading (a client that stops reading would be dropped) until cancelled."""
    while True:
        await ws.recv()


async def many_terminals(platform: LivePlatform, agent: str) -> dict:
    """Every session floods all its clients at once; then echo, one driver per session."""
    sessions = [platform.ready_session(agent) for _ in range(MANY_SESSIONS)]
    per_session = TERMINALS // MANY_SESSIONS
    groups = [[await _attach(platform, s) for _ in range(per_session)] for s in sessions]
    for group in groups:
        await _run_in_shell(group[0], "stty -echo; echo GO-$((2+2))", b"GO-4")
    clients = [ws for group in groups for ws in group]
    started = time.perf_counter()
    readers = [asyncio.create_task(_read_until_end(ws)) for ws in clients]
    await asyncio.gather(*(group[0].send(_flood(MANY_OUTPUT, 0)) for group in groups))
    results = await asyncio.gather(*readers)
    elapsed = max(at for _, at in results) - started
    per_terminal = [size / (at - started) / 1e6 for size, at in results]

    for group in groups:
        await _run_in_shell(group[0], "echo READY-$((1+1)); stty raw -echo; exec cat", b"READY-2")
    drains = [asyncio.create_task(_drain(ws)) for group in groups for ws in group[1:]]
    await asyncio.sleep(0.2)
    samples = await asyncio.gather(*(_echo_rounds(group[0]) for group in groups))
    for task in drains:
        task.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    for ws in clients:
        await ws.close()
    return {
        "echo": [s for rounds in samples for s in rounds],
        "total": sum(size for size, _ in results) / elapsed / 1e6,
        "per_terminal": sum(per_terminal) / len(per_terminal),
    }


async def _echo_rounds(ws: ClientConnection) -> list[float]:
    samples = []
    for _ in range(MANY_ECHO_ROUNDS):
        started = time.perf_counter()
        await ws.send(b"x")
        await ws.recv()
        samples.append(time.perf_counter() - started)
    return samples


async def _measure(platform: LivePlatform) -> dict:
    agent = platform.create_agent("bench-shell")["name"]
    echo, echo_cpu = await chain_echo(platform, agent)
    return {
        "echo": echo,
        "echo_cpu": echo_cpu,
        "lines": await chain_throughput(platform, agent, wrap=76),
        "raw": await chain_throughput(platform, agent, wrap=0),
        "many": await many_terminals(platform, agent),
    }


def measure() -> list[Row]:
    bare_samples, bare_mbps = bare_pty()
    platform = LivePlatform()
    platform.env["LAP_POOL_MAX"] = str(MANY_SESSIONS + 5)
    platform.start()
    try:
        fill_pool(platform, MANY_SESSIONS + 3)  # every session warm: the bench measures terminals
        chain = asyncio.run(_measure(platform))
    finally:
        platform.stop()
    many = chain["many"]
    label = f"{TERMINALS} terminals on {MANY_SESSIONS} sessions"
    return [
        *latency_rows(
            "terminal echo, full chain",
            chain["echo"],
            bare_samples,
            "bare PTY",
            {"p50": "≤ 0.5 ms", "p99": "≤ 2 ms"},
        ),
        *(
            Row(f"terminal echo, full chain: {name} CPU per echo", chain["echo_cpu"][name], "ms")
            for name in ("client", "daphne", "runner")
        ),
        *throughput_rows("terminal full chain", chain, bare_mbps),
        *latency_rows(f"terminal echo, {label}", many["echo"], chain["echo"], "1 terminal"),
        Row(
            f"terminal output per terminal, {label}",
            many["per_terminal"],
            "MB/s",
            chain["raw"],
            "1 terminal",
        ),
        Row(f"terminal output all terminals, {label}", many["total"], "MB/s"),
    ]


def main() -> None:
    print_rows(
        f"terminal_chain: client → daphne → runner (bwrap) → PTY; echo n={ECHO_ROUNDS};"
        f" base64 of {OUTPUT_BYTES >> 20} MiB; then {TERMINALS} terminals at once",
        measure(),
    )


if __name__ == "__main__":
    main()
