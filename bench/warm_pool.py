"""Warm pool vs cold start on the real platform (issue 6's targets), local driver.

For 50 sequential and 20 concurrent creates, with the pool sized to cover them and then
with no warm sandbox (cold): seconds from ``POST /agents/{id}/session`` to the session being
``ready`` and to the first byte of terminal output, p50/p95/max. The pool's target is set
back to 0 once it is full, so no replacement is provisioned while a run is measured.
"""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect

from bench.report import Row, percentile, print_rows, scaled
from tests.live import LivePlatform

SEQUENTIAL = scaled(50, 5)
CONCURRENT = scaled(20, 5)
COLD_SEQUENTIAL = scaled(10, 3)


def fill_pool(platform: LivePlatform, count: int) -> None:
    """``count`` warm shell sandboxes, then a target of 0: nothing is provisioned while a
    measurement runs."""
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


# Issue 6's targets, for the time to ``ready`` and to the first terminal byte alike.
TARGETS = {
    ("warm", "sequential", "p50"): "≤ 50 ms",
    ("warm", "sequential", "p95"): "≤ 150 ms",
    ("cold", "sequential", "p50"): "≤ 1 s",
}


def measure() -> list[Row]:
    platform = LivePlatform()
    platform.env["LAP_POOL_MAX"] = str(SEQUENTIAL + 10)
    platform.start()
    results = {}
    try:
        agent = platform.create_agent("bench-pool")["name"]
        for label, count, concurrent in (
            ("sequential", SEQUENTIAL, False),
            (f"{CONCURRENT} concurrent", CONCURRENT, True),
        ):
            fill_pool(platform, count)
            results[("warm", label)] = asyncio.run(
                _run(platform, agent, count, concurrent=concurrent)
            )
            _stop_all(platform)
        for label, count, concurrent in (
            ("sequential", COLD_SEQUENTIAL, False),
            (f"{CONCURRENT} concurrent", CONCURRENT, True),
        ):
            results[("cold", label)] = asyncio.run(
                _run(platform, agent, count, concurrent=concurrent)
            )
            _stop_all(platform)
    finally:
        platform.stop()
    rows = []
    for (start, label), values in results.items():
        ready, first_byte = ([v[i] for v in values] for i in (0, 1))
        for point, series in (("ready", ready), ("first byte", first_byte)):
            for stat, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0)):
                target = TARGETS.get((start, label, stat), "")
                metric = f"session {start} start, {label} (n={len(values)}): {point} {stat}"
                rows.append(Row(metric, percentile(series, q) * 1e3, "ms", target=target))
    return rows


def main() -> None:
    print_rows("warm_pool: POST /agents/{id}/session → ready / first terminal byte", measure())


if __name__ == "__main__":
    main()
