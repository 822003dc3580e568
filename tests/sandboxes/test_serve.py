"""``lap_serve`` for real: daphne and the q cluster as children, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def serve_env(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "lapsite.settings",
        "LAP_HOME": str(tmp_path),
        "LAP_SANDBOX_DRIVER": "tests.fakes.FakeDriver",
        "LAP_WORKERS": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, cwd=ROOT, check=True, timeout=120)
    return env


def start(env: dict[str, str], *options: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "lap_serve", "--port", str(port), *options],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert f"http://127.0.0.1:{port}/" in process.stdout.readline()
    return process, port


def wait_for_healthz(port: int) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "daphne never answered"
            time.sleep(0.2)


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies waiting for init to reap them."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    process.stdout.close()


@pytest.fixture
def served(serve_env):
    process, port = start(serve_env)
    yield process, port
    stop(process)


def test_serves_healthz_and_stops_cleanly_on_sigterm(served):
    process, port = served
    response = wait_for_healthz(port)
    assert response.status_code == 200
    assert response.json()["ok"] is True
    children = children_of(process.pid)
    assert len(children) == 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{child}").exists() for child in children)


def test_exits_with_an_error_when_a_child_dies(served):
    process, port = served
    wait_for_healthz(port)
    daphne, qcluster = children_of(process.pid)
    os.kill(qcluster, signal.SIGKILL)
    assert process.wait(timeout=30) != 0
    assert not Path(f"/proc/{daphne}").exists()
    assert not live_members(qcluster)  # the q cluster's workers went too


def test_no_worker_serves_with_daphne_alone(serve_env):
    """The Kubernetes web Deployment runs this; the worker Deployment runs ``qcluster``."""
    process, port = start(serve_env, "--no-worker")
    try:
        assert wait_for_healthz(port).status_code == 200
        (daphne,) = children_of(process.pid)
        assert "daphne" in Path(f"/proc/{daphne}/cmdline").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not Path(f"/proc/{daphne}").exists()
    finally:
        stop(process)
