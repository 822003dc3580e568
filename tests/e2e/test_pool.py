"""Issue 6, end to end: the warm pool on the real platform with real bwrap sandboxes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from sandboxes.drivers.local import LocalDriver
from sandboxes.runner_client import RunnerClient
from tests.e2e.terminal import attach, read_until
from tests.live import ROOT, LivePlatform


def set_target(platform: LivePlatform, target: int) -> None:
    reply = platform.api("PUT", "/pool", json={"targets": {"shell": target}})
    assert reply.status_code == 200, reply.text


def wait_warm(platform: LivePlatform, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        shell = platform.api("GET", "/pool").json()["harnesses"]["shell"]
        if shell["warm"] >= count and not shell["provisioning"]:
            return
        assert time.monotonic() < deadline, f"pool never reached {count} warm: {shell}"
        time.sleep(0.1)


def warm_metas(platform: LivePlatform) -> dict[str, dict]:
    """The local driver's meta of each running, unclaimed warm sandbox (runner not started)."""
    driver = LocalDriver(platform.home)
    metas = {}
    for info in driver.list():
        if info.state != "running" or "lap.pool/harness" not in info.labels:
            continue
        meta = json.loads(
            (platform.home / "sandboxes" / info.handle.sandbox_id / "meta.json").read_text()
        )
        with RunnerClient(driver.endpoints(info.handle).runner_url, meta["runner_token"]) as client:
            if not client.health().get("started"):
                metas[info.handle.sandbox_id] = meta
    return metas


def maintain(platform: LivePlatform) -> None:
    """Run pool maintenance now (its schedule runs every minute) in a process of its own."""
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from pool.tasks import pool_maintain; pool_maintain()",
        ],
        cwd=ROOT,
        env=platform.env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def timed_session(platform: LivePlatform, agent: str) -> tuple[dict, float]:
    started = time.perf_counter()
    reply = platform.api("POST", f"/agents/{agent}/session", json={})
    assert reply.status_code == 201, reply.text
    session = reply.json()
    if session["status"] != "ready":
        session = platform.wait_status(session["id"])
    assert session["status"] == "ready", session
    return session, time.perf_counter() - started


async def test_a_warm_session_is_ready_much_faster_than_cold_and_its_terminal_works(
    live_platform, shell_agent
):
    set_target(live_platform, 2)
    wait_warm(live_platform, 2)
    set_target(live_platform, 0)  # nothing replaces the two: the third create is cold
    try:
        warm, warm_seconds = timed_session(live_platform, shell_agent)
        timed_session(live_platform, shell_agent)
        _, cold_seconds = timed_session(live_platform, shell_agent)
    finally:
        set_target(live_platform, 2)
    assert warm_seconds * 3 < cold_seconds, (warm_seconds, cold_seconds)
    ws = await attach(live_platform.tty_url(warm), warm["tty_token"])
    try:
        await ws.send(b"echo warm-$((40+2))\n")
        assert b"warm-42" in await read_until(ws, b"warm-42")
    finally:
        await ws.close()


def test_a_sandbox_killed_while_warm_is_replaced(live_platform):
    set_target(live_platform, 2)
    wait_warm(live_platform, 2)
    victim, meta = next(iter(warm_metas(live_platform).items()))
    os.kill(meta["jail_pid"], signal.SIGKILL)
    maintain(live_platform)
    wait_warm(live_platform, 2)
    assert victim not in warm_metas(live_platform)
    assert not (live_platform.home / "sandboxes" / victim).exists()


def test_a_claim_whose_vault_push_fails_ends_in_a_cold_start(live_platform, shell_agent):
    set_target(live_platform, 2)
    wait_warm(live_platform, 2)
    for meta in warm_metas(live_platform).values():  # every warm sidecar dies
        os.kill(meta["sidecar_pid"], signal.SIGKILL)
    session, _ = timed_session(live_platform, shell_agent)
    assert (session["status"], session["failure_reason"]) == ("ready", "")


def test_the_embedded_default_has_two_warm_shells_right_after_start():
    platform = LivePlatform().start()  # a fresh one: the shared platform's pool is in use
    try:
        deadline = time.monotonic() + 20  # the schedule's first tick would be ~a minute
        while (shell := platform.api("GET", "/pool").json()["harnesses"]["shell"])["warm"] < 2:
            assert time.monotonic() < deadline, shell
            time.sleep(0.1)
        assert shell["target"] == 2
    finally:
        platform.stop()
