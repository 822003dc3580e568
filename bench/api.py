"""The REST API on the real platform: ``GET /sessions/{id}`` and ``POST /agents/{id}/session``.

Latency (p50/p99) of ``LATENCY_N`` sequential requests on one keep-alive connection, and
requests/s from ``CLIENTS`` concurrent clients. The baseline is daphne and Django's floor in
the same run: an unknown API path (404 from the URL resolver, no view, no database).
Each created session is deleted at once, untimed, so no sandbox piles up: a session stopped
while ``creating`` never gets one (the bring-up finds it ended).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from bench.report import Row, latency_rows, print_rows, scaled
from tests.live import API, LivePlatform

LATENCY_N = scaled(300, 30)
THROUGHPUT_N = scaled(400, 40)
CLIENTS = 8


def _client(platform: LivePlatform) -> httpx.Client:
    return httpx.Client(
        base_url=platform.url + API,
        headers={"Authorization": f"Bearer {platform.key}"},
        timeout=60,
    )


def _latency(platform: LivePlatform, request: Callable[[httpx.Client], object]) -> list[float]:
    samples = []
    with _client(platform) as client:
        request(client)  # warm-up: connection, first-use caches
        for _ in range(LATENCY_N):
            started = time.perf_counter()
            request(client)
            samples.append(time.perf_counter() - started)
    return samples


def _throughput(platform: LivePlatform, request: Callable[[httpx.Client], object]) -> float:
    per_client = THROUGHPUT_N // CLIENTS

    def run() -> None:
        with _client(platform) as client:
            for _ in range(per_client):
                request(client)

    threads = [threading.Thread(target=run) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_client * CLIENTS / (time.perf_counter() - started)


def measure() -> list[Row]:
    platform = LivePlatform()
    platform.env["LAP_POOL_MAX"] = "0"
    platform.start()
    created: list[str] = []
    lock = threading.Lock()

    def floor(client: httpx.Client) -> None:
        assert client.get("/no-such-endpoint").status_code == 404

    def get_session(client: httpx.Client) -> None:
        assert client.get(f"/sessions/{session['id']}").status_code == 200

    def create(client: httpx.Client) -> None:
        reply = client.post(f"/agents/{agent}/session", json={})
        assert reply.status_code == 201, reply.text
        with lock:
            created.append(reply.json()["id"])

    def create_timed_then_delete(client: httpx.Client) -> float:
        started = time.perf_counter()
        create(client)
        elapsed = time.perf_counter() - started
        client.delete(f"/sessions/{created[-1]}")
        return elapsed

    try:
        agent = platform.create_agent("bench-api")["name"]
        session = platform.ready_session(agent)
        floor_latency = _latency(platform, floor)
        floor_rps = _throughput(platform, floor)
        get_latency = _latency(platform, get_session)
        get_rps = _throughput(platform, get_session)
        with _client(platform) as client:
            post_latency = [create_timed_then_delete(client) for _ in range(LATENCY_N)]
        post_rps = _throughput(platform, create)
        with _client(platform) as client:
            for session_id in created:
                client.delete(f"/sessions/{session_id}")
    finally:
        platform.stop()
    floor_label = "404 floor"
    return [
        *latency_rows("API GET /sessions/{id}", get_latency, floor_latency, floor_label),
        Row(
            f"API GET /sessions/{{id}} ({CLIENTS} clients)",
            get_rps,
            "req/s",
            floor_rps,
            floor_label,
        ),
        *latency_rows("API POST /agents/{id}/session", post_latency, floor_latency, floor_label),
        Row(
            f"API POST /agents/{{id}}/session ({CLIENTS} clients)",
            post_rps,
            "req/s",
            floor_rps,
            floor_label,
        ),
    ]


def main() -> None:
    print_rows(
        f"api: {LATENCY_N} sequential requests, {THROUGHPUT_N} from {CLIENTS} clients", measure()
    )


if __name__ == "__main__":
    main()
