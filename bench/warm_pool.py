"""Warm pool vs cold start on the real platform (issue 6's targets), local driver.

For 50 sequential and 20 concurrent creates, with the pool sized to cover them and then
with no warm sandbox (cold): seconds from ``POST /agents/{id}/session`` to the session being
``ready`` and to the first byte of terminal output, p50/p95/max. The pool's target is set
back to 0 once it is full, so no replacement is provisioned while a run is measured.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from websockets.asyncio.client import connect

from bench.terminal_runner import percentile
from tests.live import LivePlatform

SEQUENTIAL = 50
CONCURRENT = 20
COLD_SEQUENTIAL = 10


def _fill(platform: LivePlatform, count: int) -> None:
    platform.api("PUT", "/pool", json={"targets": {"shell": count}}).raise_for_status()
    deadline = time.monotonic() + 600
    while True:
        shell = platform.api("GET", "/pool").json()["harnesses"]["shell"]
        if shell["warm"] >= count and not shell["provisioning"]:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"pool stuck at {shell}")
        time.sleep(0.2)
    platform.api("PUT", "/pool", json={"targets": {"shell": 0}}).raise_for_status()


async def _create(platform: LivePlatform, agent: str) -> tuple[float, float]:
    """Seconds from POST to ``ready`` (polled every 5 ms) and to the first terminal byte."""
    started = time.perf_counter()
    reply = await asyncio.to_thread(platform.api, "POST", f"/agents/{agent}/session", json={})
    session = reply.json()
    while session["status"] == "creating":
        await asyncio.sleep(0.005)
        reply = await asyncio.to_thread(platform.api, "GET", f"/sessions/{session['id']}")
        session = reply.json()
    assert session["status"] == "ready", session
    ready = time.perf_counter() - started
    ws = await connect(
        platform.tty_url(session),
        additional_headers={"Authorization": f"Bearer {session['tty_token']}"},
    )
    await ws.recv()
    first_byte = time.perf_counter() - started
    await ws.close()
    return ready, first_byte


async def _run(platform: LivePlatform, agent: str, count: int, *, concurrent: bool) -> list:
    if concurrent:
        return list(await asyncio.gather(*(_create(platform, agent) for _ in range(count))))
    return [await _create(platform, agent) for _ in range(count)]


def _stop_all(platform: LivePlatform) -> None:
    for session in platform.api(
        "GET", "/sessions", params={"status": "ready", "limit": 200}
    ).json():
        platform.api("DELETE", f"/sessions/{session['id']}")


def main() -> None:
    platform = LivePlatform()
    platform.env["LAP_POOL_MAX"] = str(SEQUENTIAL + 10)
    platform.start()
    results = {}
    try:
        agent = platform.create_agent("bench-pool")["name"]
        for label, count, concurrent in (
            ("sequential", SEQUENTIAL, False),
            ("concurrent", CONCURRENT, True),
        ):
            _fill(platform, count)
            results[("warm", label)] = asyncio.run(
                _run(platform, agent, count, concurrent=concurrent)
            )
            _stop_all(platform)
        for label, count, concurrent in (
            ("sequential", COLD_SEQUENTIAL, False),
            ("concurrent", CONCURRENT, True),
        ):
            results[("cold", label)] = asyncio.run(
                _run(platform, agent, count, concurrent=concurrent)
            )
            _stop_all(platform)
    finally:
        platform.stop()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("\nwarm_pool: POST /agents/{id}/session → ready / first terminal byte, local driver")
    print(f"(load average before the report: {load}; {os.cpu_count()} CPUs)")
    print(f"{'start':<6}{'run':<12}{'n':>4}  {'measure':<11}{'p50':>9}{'p95':>9}{'max':>9}")
    for (start, label), values in results.items():
        for index, measure in enumerate(("ready", "first_byte")):
            series = [v[index] for v in values]
            print(
                f"{start:<6}{label:<12}{len(series):>4}  {measure:<11}"
                f"{statistics.median(series) * 1e3:>6.0f} ms"
                f"{percentile(series, 0.95) * 1e3:>6.0f} ms{max(series) * 1e3:>6.0f} ms"
            )


if __name__ == "__main__":
    main()
