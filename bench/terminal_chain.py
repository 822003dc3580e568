"""The whole terminal chain on the real platform (issue 3's targets).

Client → daphne (the Channels bridge) → runner in a bwrap jail → PTY → back: keystroke echo
RTT and output throughput, beside a bare PTY measured in the same run. Session start (cold
and warm) is measured by ``bench/warm_pool.py``.
"""

from __future__ import annotations

import asyncio
import statistics

from websockets.asyncio.client import ClientConnection, connect

from bench.terminal_runner import (
    ECHO_ROUNDS,
    END,
    FLOODS,
    OUTPUT_BYTES,
    bare_echo,
    bare_throughput,
    percentile,
    ws_echo,
    ws_throughput,
)
from tests.live import LivePlatform


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


async def chain_echo(platform: LivePlatform, agent: str) -> list[float]:
    ws = await _attach(platform, platform.ready_session(agent))
    await _run_in_shell(ws, "echo READY-$((1+1)); stty raw -echo; exec cat", b"READY-2")
    await asyncio.sleep(0.2)
    samples = await ws_echo(ws)
    await ws.close()
    return samples


async def chain_throughput(platform: LivePlatform, agent: str, wrap: int) -> float:
    ws = await _attach(platform, platform.ready_session(agent))
    await _run_in_shell(ws, "stty -echo; echo GO-$((2+2))", b"GO-4")
    flood = f"head -c {OUTPUT_BYTES} /dev/zero | base64 -w {wrap}; printf '{END.decode()}'\n"
    mbps = await ws_throughput(ws, flood.encode())
    await ws.close()
    return mbps


async def _measure(platform: LivePlatform) -> dict:
    agent = platform.create_agent("bench-shell")["name"]
    return {
        "echo": await chain_echo(platform, agent),
        "lines": await chain_throughput(platform, agent, wrap=76),
        "raw": await chain_throughput(platform, agent, wrap=0),
    }


def main() -> None:
    bare = {"echo": bare_echo(), **{name: bare_throughput(p) for name, p in FLOODS.items()}}
    platform = LivePlatform().start()
    try:
        platform.settle_pool()
        chain = asyncio.run(_measure(platform))
    finally:
        platform.stop()
    print(
        f"\nterminal_chain: client → daphne → runner (bwrap) → PTY; echo n={ECHO_ROUNDS};"
        f" base64 of {OUTPUT_BYTES >> 20} MiB as 76-column lines and as one line"
    )
    print(f"{'path':<24}{'echo p50':>12}{'echo p99':>12}{'MB/s lines':>12}{'MB/s raw':>12}")
    rows = []
    for label, measured in (("bare PTY (in-process)", bare), ("full chain", chain)):
        echo = measured["echo"]
        row = (statistics.median(echo) * 1e3, percentile(echo, 0.99) * 1e3)
        rows.append((*row, measured["lines"], measured["raw"]))
        print(f"{label:<24}{row[0]:>9.3f} ms{row[1]:>9.3f} ms", end="")
        print(f"{measured['lines']:>12.1f}{measured['raw']:>12.1f}")
    ratios = [c / b for b, c in zip(rows[0], rows[1], strict=True)]
    print(f"{'ratio chain / bare':<24}" + "".join(f"{r:>11.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
