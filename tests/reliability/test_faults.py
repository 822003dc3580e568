"""Faults on the real platform: each ends in a defined state, never a stuck or leaked one.

- a django-q2 worker killed during a cold bring-up → the session ends ``ready`` or
  ``failed`` once the creating timeout has passed, and its sandbox is gone;
- the vault sidecar killed → egress fails closed; reconcile restarts it and pushes the
  bundle again, and egress (and interception records) work again;
- the database unavailable for 10 s → the API answers 503 in the error shape (never 500),
  an attached terminal keeps working, and everything recovers without a restart;
- the database behind a partition (connections hang rather than fail) → requests and new
  attaches end after the connect timeout with 503 / close 4503, never hang;
- the sandbox runs out of memory and ends → the session is ``dead`` with the reason
  ``OOMKilled`` (a bystander is unaffected).

The platform (daphne) restarting while a terminal is attached, with the ``lap`` CLI
reconnecting and the shell surviving, is
``tests/lapcli/test_real_platform.py::test_platform_restart_reconnects_and_the_shell_kept_running``.
Reconcile runs every minute; these tests run it at once (``LivePlatform.run_task``) rather
than wait for its schedule.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import time

import pytest
import trustme
from websockets.exceptions import ConnectionClosed

from sandboxes.drivers.local import LocalDriver
from tests.e2e.terminal import attach, read_until
from tests.e2e.test_vault import EchoServer, curl, sh
from tests.live import LivePlatform
from tests.reliability.local_sandboxes import alive, sandbox_of, wait_for
from tests.reliability.outage import CuttableProxy, sqlite_locked
from tests.reliability.sizes import sized

RECONCILE = "sandboxes.tasks.sandbox_reconcile"
CREATING_TIMEOUT = 12
OUTAGE_SECONDS = 10
CONNECT_TIMEOUT = 2


# --- a worker killed during bring-up -----------------------------------------------------


def bring_up_worker(platform: LivePlatform) -> int | None:
    """The pid of the django-q2 worker that took the newest bring-up task, from its log lines
    ("<name> ready for work at <pid>", "<name> processing <task> '<function>'")."""
    log = platform.log.read_text()
    pids = dict(re.findall(r"(Process-\w+) ready for work at (\d+)", log))
    busy = re.findall(r"(Process-\w+) processing \S+ 'sandboxes.tasks.session_bring_up'", log)
    return int(pids[busy[-1]]) if busy else None


PHASES_TO_KILL_IN = ["creating_sandbox", "starting_vault", "pushing_secrets", "starting_harness"]


def test_a_worker_killed_during_bring_up_never_leaves_a_stuck_session_or_a_sandbox(
    start_platform,
):
    platform = start_platform(LAP_POOL_MAX="0", LAP_CREATING_TIMEOUT=str(CREATING_TIMEOUT))
    agent = platform.create_agent("killed-worker")["name"]
    ended = {}
    for phase in PHASES_TO_KILL_IN[: sized(1, 4)]:
        session = platform.api("POST", f"/agents/{agent}/session", json={}).json()
        reached = wait_for(
            lambda s=session, phase=phase: (
                platform.api("GET", f"/sessions/{s['id']}").json()["phase"] in (phase, "ready")
            ),
            30,
            f"phase {phase}",
        )
        assert reached
        worker = bring_up_worker(platform)
        assert worker is not None and alive(worker)
        os.kill(worker, signal.SIGKILL)
        ended[session["id"]] = time.monotonic()
    time.sleep(CREATING_TIMEOUT + 1)
    platform.run_task(RECONCILE)
    for session_id, killed_at in ended.items():
        session = platform.api("GET", f"/sessions/{session_id}").json()
        assert session["status"] in ("ready", "failed"), session
        if session["status"] == "failed":
            assert f"creating timed out after {CREATING_TIMEOUT}s" in session["failure_reason"]
            labels = [info.labels for info in LocalDriver(platform.home).list()]
            assert all(label.get("lap.session/id") != session_id for label in labels), labels
        assert time.monotonic() - killed_at < CREATING_TIMEOUT + 60
    # The cluster replaced its workers: a new session still comes up.
    assert platform.ready_session(agent)["status"] == "ready"


# --- the vault sidecar killed ------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("upstream") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    server = EchoServer(ca)
    yield server, path
    server.stop()


@pytest.fixture(scope="module")
def platform(start_platform, upstream):
    """For the faults inside one sandbox: its sidecars trust the local upstream."""
    return start_platform(LAP_VAULT_UPSTREAM_CA=str(upstream[1]))


def test_a_killed_vault_fails_closed_and_recovers_after_reconcile(platform, upstream):
    echo, _ = upstream
    secret = "ghp_fault_" + secrets.token_hex(16)
    platform.create_agent(
        "vault-fault",
        env_vars={"GITHUB_TOKEN": secret},
        env_var_hosts={"GITHUB_TOKEN": ["localhost"]},
        allow_out=["localhost", "127.0.0.1"],
    )
    sid = platform.ready_session("vault-fault")["id"]
    out, code = sh(platform, sid, curl(echo.port))
    assert code == 0 and echo.authorizations()[-1] == f"Bearer {secret}", out

    _, meta = sandbox_of(platform, sid)
    os.kill(meta["sidecar_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(meta["sidecar_pid"]), 10, "the sidecar to die")
    before = len(echo.received)
    out, code = sh(platform, sid, curl(echo.port))
    assert code != 0, out  # fails closed: no way out without the vault
    assert len(echo.received) == before

    assert "'vault_restarted': 1" in platform.run_task(RECONCILE)
    _, restarted = sandbox_of(platform, sid)
    assert restarted["sidecar_pid"] != meta["sidecar_pid"] and alive(restarted["sidecar_pid"])
    out, code = sh(platform, sid, curl(echo.port))
    assert code == 0, out
    assert echo.authorizations()[-1] == f"Bearer {secret}"
    # The restarted sidecar's records reach the platform (its numbering continues).
    out, _ = sh(platform, sid, curl(echo.port, host="127.0.0.1"))
    assert "credential_not_allowed_for_host" in out
    records = platform.api("GET", f"/sessions/{sid}/interceptions", params={"limit": 50}).json()
    blocked = [r["host"] for r in records["data"] if r["decision"] == "blocked"]
    assert blocked == ["127.0.0.1"], records
    assert platform.api("GET", f"/sessions/{sid}").json()["status"] == "ready"
    assert secret not in platform.log.read_text()


# --- the database unavailable ------------------------------------------------------------


@pytest.fixture
def proxied_platform(start_platform):
    """A platform, and the ``CuttableProxy`` in front of its Postgres (None on SQLite)."""
    proxies: list[CuttableProxy] = []

    def through_proxy(platform: LivePlatform) -> None:
        url = platform.env.get("DATABASE_URL", "")
        if url.startswith("postgres"):
            proxy, platform.env["DATABASE_URL"] = CuttableProxy.for_url(url)
            proxies.append(proxy)

    platform = start_platform(
        prepare=through_proxy,
        LAP_POOL_MAX="0",
        LAP_SQLITE_TIMEOUT="2",
        LAP_DB_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
    )
    yield platform, proxies[0] if proxies else None
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def outage_platform(proxied_platform):
    """A platform, and a context manager that makes its database unavailable: a cut proxy in
    front of Postgres (the second CI pass); on SQLite, an exclusive lock, which in WAL mode
    stops writers but not readers."""
    platform, proxy = proxied_platform
    if proxy is not None:
        yield platform, proxy.cut_off
    else:
        yield platform, lambda: sqlite_locked(platform.home / "lap.sqlite3")


async def test_the_api_answers_503_while_the_database_is_away_and_recovers(outage_platform):
    platform, outage = outage_platform
    agent = platform.create_agent("db-outage")["name"]
    session = platform.ready_session(agent)
    served_by = platform.process.pid
    ws = await attach(platform.tty_url(session), session["tty_token"])
    statuses: list[int] = []
    try:
        await ws.recv()
        with outage():
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE_SECONDS:
                for method, path in (
                    ("GET", f"/sessions/{session['id']}"),
                    ("POST", f"/agents/{agent}/session"),
                    ("GET", "/agents"),
                ):
                    reply = await asyncio.to_thread(platform.api, method, path, json={})
                    statuses.append(reply.status_code)
                    assert reply.status_code in (200, 201, 503), reply.text
                    if reply.status_code == 503:
                        assert reply.json()["code"] == "unavailable", reply.text
                health = await asyncio.to_thread(platform.client.get, "/healthz")
                assert health.status_code in (200, 503), health.text
                # Keystrokes never touch the database: the terminal carries on.
                marker = f"during-{len(statuses)}".encode()
                await ws.send(b"echo " + marker + b"\n")
                await read_until(ws, marker + b"\r\n", timeout=10)
            late = await attach(platform.tty_url(session), session["tty_token"])
            if platform.env.get("DATABASE_URL", "").startswith("postgres"):
                # A new attach needs the database: a clear close code, not a crashed handler.
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(15):
                        await late.recv()
                assert late.close_code == 4503
            else:
                # SQLite in WAL mode: the lock stops writers only, and an attach only reads.
                async with asyncio.timeout(15):
                    await late.recv()
                await late.close()
    finally:
        await ws.close()
    assert 503 in statuses, statuses

    reply = await asyncio.to_thread(platform.api, "GET", f"/sessions/{session['id']}")
    assert reply.status_code == 200, reply.text
    # No restart: the same processes serve, the cluster takes new cold bring-ups, and
    # sessions created just before the cut end ready or failed, none stuck.
    assert platform.process.poll() is None and platform.process.pid == served_by
    assert platform.ready_session(agent)["status"] == "ready"
    for item in platform.api("GET", "/sessions", params={"status": "creating"}).json():
        ended = platform.wait_status(item["id"], timeout=60)
        assert ended["status"] in ("ready", "failed"), ended


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="a network partition needs a database on the network (the Postgres CI pass)",
)
async def test_a_database_that_stops_answering_costs_a_bounded_wait_not_a_hung_platform(
    proxied_platform,
):
    platform, proxy = proxied_platform
    agent = platform.create_agent("db-partition")["name"]
    session = platform.ready_session(agent)
    cookie = platform.browser_cookie()
    ws = await attach(platform.tty_url(session), session["tty_token"])
    try:
        await ws.recv()
        with proxy.stalled():
            # Each connect gives up after LAP_DB_CONNECT_TIMEOUT: a 503, not a request (and a
            # worker thread) waiting on a server that will never answer.
            async with asyncio.timeout(CONNECT_TIMEOUT * 10):
                reply = await asyncio.to_thread(platform.api, "GET", f"/sessions/{session['id']}")
            assert reply.status_code == 503, reply.text
            assert reply.json()["code"] == "unavailable", reply.text
            # A new attach, by token or by cookie, is accepted at once and then closed with
            # why, not dropped mid-handshake while it waits for the database.
            for late in (
                await attach(platform.tty_url(session), session["tty_token"]),
                await attach(
                    platform.tty_url(session),
                    None,
                    origin=platform.url,
                    additional_headers={"Cookie": cookie},
                ),
            ):
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(CONNECT_TIMEOUT * 10):
                        await late.recv()
                assert late.close_code == 4503
            await ws.send(b"echo still-$((6*7))\n")
            await read_until(ws, b"still-42\r\n", timeout=10)
    finally:
        await ws.close()
    reply = await asyncio.to_thread(platform.api, "GET", f"/sessions/{session['id']}")
    assert reply.status_code == 200, reply.text


# --- the sandbox out of memory -----------------------------------------------------------

# A process grows past the sandbox's 2 GiB memory group and the kernel's OOM killer ends it
# (the largest process); then the sandbox's core goes too (here the shell kills the runner,
# as when the runner is the one the killer picks). The driver reads the group's OOM counter.
FILL_MEMORY = "python3 -c 'b = b\"x\" * (3 << 30)'; kill -9 $PPID\n"


async def test_a_sandbox_out_of_memory_ends_dead_with_the_reason(platform):
    agent = platform.create_agent("oom")["name"]
    bystander = platform.ready_session(agent)
    session = platform.ready_session(agent)
    _, meta = sandbox_of(platform, session["id"])
    if not meta["cgroups"]:
        pytest.skip("cgroup v1 is not writable here: limits are rlimits, no OOM counter")
    ws = await attach(platform.tty_url(session), session["tty_token"])
    await ws.recv()
    await ws.send(FILL_MEMORY.encode())
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(60):
            while True:
                await ws.recv()
    assert ws.close_code == 4503  # the sandbox went away
    wait_for(lambda: not alive(meta["jail_pid"]), 10, "the jail to end")
    platform.run_task(RECONCILE)
    dead = platform.api("GET", f"/sessions/{session['id']}").json()
    assert (dead["status"], dead["failure_reason"]) == ("dead", "sandbox exited: OOMKilled")
    assert platform.api("GET", f"/sessions/{bystander['id']}").json()["status"] == "ready"
