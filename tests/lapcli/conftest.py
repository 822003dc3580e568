"""Fixtures for the lap CLI tests: an injectable fake API (unit tests) and the loopback fake
platform served by the real daphne (PTY tests)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lapcli.context import Environment

ROOT = Path(__file__).resolve().parents[2]
LAP = str(Path(sys.executable).with_name("lap"))
DAPHNE = str(Path(sys.executable).with_name("daphne"))
KEY = "test-key-0123456789"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class FakeApi:
    """Route table for ``httpx.MockTransport``: ``api.on("GET", "/agents", handler)``; every
    request is recorded in ``api.requests``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, handler: Any) -> None:
        if not callable(handler):
            payload = handler
            handler = lambda request: httpx.Response(200, json=payload)  # noqa: E731
        self.routes[(method, "/api/v1/managed_agents" + path)] = handler

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"error": f"no route {request.url.path}"})
        return handler(request)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        full = "/api/v1/managed_agents" + path
        return [r for r in self.requests if r.method == method and r.url.path == full]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def make_env(api: FakeApi, tmp_path: Path) -> Callable[..., Environment]:
    def make(**environ: str) -> Environment:
        base = {"LAP_CONFIG_DIR": str(tmp_path / "lapconf"), "LAP_URL": "http://lap.test"}
        base["LAP_KEY"] = KEY
        base.update(environ)
        return Environment(
            environ={k: v for k, v in base.items() if v},
            transport=httpx.MockTransport(api.handle),
            stdin_isatty=False,
            stderr_isatty=False,
            poll_interval=0,
            sleep=lambda seconds: None,
        )

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith("LAP_")}
    env.update(extra)
    return env


class FakePlatform:
    """tests/lapcli/fakeplatform.py under ``daphne`` on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = KEY
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(workdir / "daphne.log", "wb")
        self.process = subprocess.Popen(
            [
                DAPHNE,
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "tests.lapcli.fakeplatform:application",
            ],
            cwd=ROOT,
            env=clean_environ(FAKE_LAP_KEY=KEY, FAKE_LAP_DIR=str(workdir), PYTHONPATH=str(ROOT)),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/api/v1/managed_agents/agents", timeout=1, trust_env=False)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake platform did not start: {(workdir / 'daphne.log').read_text()}")

    def seen(self, session_id: str) -> dict[str, Any]:
        """What the server observed for a session (resize frames, aborts, messages)."""
        response = httpx.get(f"{self.url}/_test/sessions/{session_id}", trust_env=False)
        return json.loads(response.text)

    def lap_env(self, config_dir: Path, **extra: str) -> dict[str, str]:
        return clean_environ(
            LAP_URL=self.url,
            LAP_KEY=self.key,
            LAP_CONFIG_DIR=str(config_dir),
            TERM="xterm",
            **extra,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePlatform]:
    server = FakePlatform(tmp_path_factory.mktemp("platform"))
    yield server
    server.stop()


@pytest.fixture
def private_platform(tmp_path: Path) -> Iterator[FakePlatform]:
    """A platform of its own, for tests that kill it."""
    server = FakePlatform(tmp_path / "platform")
    yield server
    server.stop()
