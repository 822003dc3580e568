"""Load on the real platform: many sessions at once, many terminals streaming at once.

- N concurrent ``POST /agents/{id}/session`` with a warm pool of M: every session ends
  ``ready`` (its sandbox answers) or ``failed`` with a reason, none stays ``creating``, and
  once they are stopped no sandbox is left but the pool's. CI: N=10, M=4; full: N=50, M=10.
- T terminals attached at once (S sessions, T/S clients each) while every session prints
  numbered, checksummed lines for D seconds: every client receives every line, in order,
  intact. CI: 20 terminals on 4 sessions for 10 s; full: 100 on 20 sessions for 60 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

import httpx
import pytest

from sandboxes.drivers.local import LocalDriver
from tests.e2e.terminal import attach, read_until
from tests.e2e.test_exec_and_recording import run
from tests.reliability.local_sandboxes import wait_for
from tests.reliability.sizes import sized

CREATES = sized(10, 50)
POOL = sized(4, 10)
SESSIONS = sized(4, 20)
CLIENTS_PER_SESSION = 5
SECONDS = sized(10, 60)
LINES_PER_SECOND = 500
CREATING_TIMEOUT = sized(120, 300)

# Prints "L<n> <first 16 hex of sha256(n)>" LINES_PER_SECOND times a second for SECONDS,
# then "END <count>"; started by one client once all of them are attached.
GENERATOR = (
    "python3 -c 'import hashlib, sys, time\n"
    "n, end = 0, time.monotonic() + {seconds}\n"
    "while time.monotonic() < end:\n"
    "    n += 1\n"
    '    print("L%d %s" % (n, hashlib.sha256(str(n).encode()).hexdigest()[:16]), flush=True)\n'
    "    time.sleep(1 / {rate})\n"
    'print("END", n, "DONE", flush=True)\'\n'
)
LINE = re.compile(rb"L(\d+) ([0-9a-f]{16})\r\n")
END = re.compile(rb"END (\d+) DONE")


@pytest.fixture(scope="module")
def platform(start_platform):
    return start_platform(
        LAP_POOL_MAX=str(POOL), LAP_CREATING_TIMEOUT=str(CREATING_TIMEOUT), LAP_WORKERS="2"
    )


def set_pool(platform, target: int) -> None:
    reply = platform.api("PUT", "/pool", json={"targets": {"shell": target}})
    assert reply.status_code == 200, reply.text


def pool_counts(platform) -> dict:
    return platform.api("GET", "/pool").json()["harnesses"]["shell"]


async def test_concurrent_creates_with_a_pool_all_end_ready_or_failed(platform):
    agent = platform.create_agent("load-creates")["name"]
    set_pool(platform, POOL)
    wait_for(
        lambda: (c := pool_counts(platform))["warm"] >= POOL and not c["provisioning"],
        180,
        f"{POOL} warm sandboxes",
    )
    api = f"{platform.url}/api/v1/managed_agents"
    headers = {"Authorization": f"Bearer {platform.key}"}
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        replies = await asyncio.gather(
            *(client.post(f"{api}/agents/{agent}/session", json={}) for _ in range(CREATES))
        )
        assert [r.status_code for r in replies] == [201] * CREATES, [r.text for r in replies]
        ids = [r.json()["id"] for r in replies]
        deadline = time.monotonic() + CREATING_TIMEOUT + 70  # reconcile runs every minute
        while True:
            sessions = [(await client.get(f"{api}/sessions/{i}")).json() for i in ids]
            creating = [s for s in sessions if s["status"] == "creating"]
            if not creating:
                break
            assert time.monotonic() < deadline, f"stuck in creating: {creating}"
            await asyncio.sleep(0.5)
    ready = [s for s in sessions if s["status"] == "ready"]
    for session in sessions:
        assert session["status"] in ("ready", "failed"), session
        if session["status"] == "failed":
            assert session["failure_reason"], session
    assert len(ready) >= CREATES // 2, sessions  # the machine is shared: some may time out
    for session in ready:  # each one's sandbox answers
        status, events = run(platform, session["id"], {"argv": ["echo", "alive"]})
        assert (status, events[-1]) == (200, {"exit_code": 0}), events

    set_pool(platform, 0)
    for session_id in ids:
        platform.api("DELETE", f"/sessions/{session_id}")
    platform.run_task("pool.tasks.pool_maintain")
    platform.run_task("sandboxes.tasks.sandbox_reconcile")
    left = [
        info.labels
        for info in LocalDriver(platform.home).list()
        if "lap.pool/harness" not in info.labels
    ]
    assert left == [], left


def _verify(output: bytes) -> int:
    """How many lines the generator printed; fails unless all arrived in order, intact."""
    end = END.search(output)
    assert end is not None, output[-500:]
    count = int(end.group(1))
    numbers = []
    for match in LINE.finditer(output[: end.start()]):
        number, digest = int(match.group(1)), match.group(2).decode()
        assert digest == hashlib.sha256(str(number).encode()).hexdigest()[:16], match.group(0)
        numbers.append(number)
    assert numbers == list(range(1, count + 1)), (count, _gaps(numbers, count))
    return count


def _gaps(numbers: list[int], count: int) -> list[int]:
    return sorted(set(range(1, count + 1)) - set(numbers))[:20]


async def test_many_attached_terminals_stream_without_dropping_a_byte(platform):
    agent = platform.create_agent("load-terminals")["name"]
    sessions = [platform.ready_session(agent) for _ in range(SESSIONS)]
    clients = []
    for session in sessions:
        for _ in range(CLIENTS_PER_SESSION):
            ws = await attach(platform.tty_url(session), session["tty_token"])
            await ws.recv()  # the attach snapshot: what came before the generator
            clients.append((session, ws))
    for session in sessions:  # stty -echo: the command itself is not echoed as lines
        ws = next(ws for s, ws in clients if s is session)
        await ws.send(b"stty -echo; echo READY-$((1+1))\n")
        await read_until(ws, b"READY-2")
    command = GENERATOR.format(seconds=SECONDS, rate=LINES_PER_SECOND).encode()

    async def collect(ws) -> bytes:
        output = b""
        async with asyncio.timeout(SECONDS * 3 + 60):
            while not END.search(output[-200:]):
                frame = await ws.recv()
                output += frame if isinstance(frame, bytes) else b""
        return output

    readers = [asyncio.create_task(collect(ws)) for _, ws in clients]
    for session in sessions:
        ws = next(ws for s, ws in clients if s is session)
        await ws.send(command)
    try:
        outputs = await asyncio.gather(*readers)
    finally:
        for _, ws in clients:
            await ws.close()
    counts = [_verify(output) for output in outputs]
    assert min(counts) >= SECONDS * LINES_PER_SECOND // 4, counts  # it did stream, even loaded
    assert platform.client.get("/healthz").json()["ok"] is True
