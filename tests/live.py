"""A real platform on loopback for end-to-end tests: ``manage.py lap_serve`` (daphne + the
django-q2 cluster) in subprocesses, with its own state directory and database.

Tests talk to it only over HTTP and WebSocket, as users do. With ``DATABASE_URL`` set
(the Postgres CI run) it gets a fresh Postgres database of its own; ``REDIS_URL`` is passed
on with a database number of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from sandboxes.drivers.local import LocalDriver

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1/managed_agents"
LIVE_REDIS_DB = "13"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_database(base_url: str) -> tuple[str, str]:
    """Create a fresh database next to ``base_url``'s; returns (its URL, its name)."""
    import psycopg

    name = f"lap_live_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(base_url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), admin_url


class LivePlatform:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="lap-live-"))
        self.home.chmod(0o711)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "live-master-" + uuid.uuid4().hex
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LAP_", "DJANGO_"))},
            "LAP_HOME": str(self.home),
            "LAP_MASTER_KEY": self.key,
            "LAP_INSTANCE": f"lap-live-{uuid.uuid4().hex[:8]}",
            "DJANGO_SETTINGS_MODULE": "lapsite.settings",
        }
        self._drop: tuple[str, str] | None = None
        if os.environ.get("DATABASE_URL", "").startswith("postgres"):
            db_url, admin_url = _postgres_database(os.environ["DATABASE_URL"])
            self.env["DATABASE_URL"] = db_url
            self._drop = (admin_url, urlsplit(db_url).path.lstrip("/"))
        if os.environ.get("REDIS_URL"):
            parts = urlsplit(os.environ["REDIS_URL"])
            self.env["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{LIVE_REDIS_DB}"))
        self.process: subprocess.Popen | None = None
        self.log = self.home / "platform.log"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def run_task(self, dotted: str) -> str:
        """Run a task function now (its schedule may be a minute away) in a process of its own,
        as the worker would; returns what it printed (its result's repr)."""
        module, _, name = dotted.rpartition(".")
        done = subprocess.run(
            [
                *(sys.executable, "manage.py", "shell", "-c"),
                f"from {module} import {name}; print(repr({name}()))",
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def start(self) -> LivePlatform:
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("lap_bootstrap")
        return self.serve()

    def serve(self) -> LivePlatform:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "lap_serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/healthz").status_code < 500:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"platform did not start:\n{self.log.read_text()[-3000:]}")

    def kill_server(self) -> None:
        """Stop daphne and the worker; sandboxes keep running, as in a platform restart."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def stop(self) -> None:
        self.kill_server()
        self.client.close()
        # Sandboxes outlive the platform by design (restarts must not kill them): end them here.
        driver = LocalDriver(self.home)
        for info in driver.list():
            driver.destroy(info.handle)
        if self._drop is not None:
            import psycopg

            admin_url, name = self._drop
            with psycopg.connect(admin_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- the API, as a client sees it ---------------------------------------------------

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.client.request(method, API + path, **kwargs)

    def create_agent(self, name: str, **fields) -> dict:
        body = {"name": name, "model": "none", "harness_id": "shell", **fields}
        reply = self.api("POST", "/agents", json=body)
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    def wait_status(self, session_id: str, *, timeout: float = 30, until=("ready",)) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            session = self.api("GET", f"/sessions/{session_id}").json()
            if session["status"] in until or session["status"] in ("failed", "dead"):
                return session
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} stuck: {session}")
            time.sleep(0.05)

    def settle_pool(self, timeout: float = 120) -> None:
        """Wait until no warm sandbox is being provisioned (benchmarks measure a quiet platform)."""
        deadline = time.monotonic() + timeout
        while any(h["provisioning"] for h in self.api("GET", "/pool").json()["harnesses"].values()):
            if time.monotonic() > deadline:
                raise TimeoutError("the warm pool is still provisioning")
            time.sleep(0.1)

    def ready_session(self, agent: str) -> dict:
        reply = self.api("POST", f"/agents/{agent}/session", json={})
        assert reply.status_code in (200, 201), reply.text
        session = self.wait_status(reply.json()["id"])
        assert session["status"] == "ready", session
        return session

    def create_user(self, username: str) -> str:
        """A new staff user (``createsuperuser``); returns its password."""
        password = uuid.uuid4().hex
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": password}
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "createsuperuser",
                "--noinput",
                "--username",
                username,
                "--email",
                f"{username}@example.com",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return password

    def browser_cookie(self, username: str = "e2e-browser") -> str:
        """Log a new staff user in through the admin login form; returns the Cookie header."""
        password = self.create_user(username)
        with httpx.Client(base_url=self.url) as browser:
            form = browser.get("/admin/login/")
            reply = browser.post(
                "/admin/login/",
                data={
                    "username": username,
                    "password": password,
                    "csrfmiddlewaretoken": form.cookies["csrftoken"],
                    "next": "/admin/",
                },
            )
            assert reply.status_code == 302, reply.text[:500]
            return f"sessionid={browser.cookies['sessionid']}"

    def lap_env(self, config_dir: Path, **extra: str) -> dict[str, str]:
        """The environment for running the real ``lap`` CLI against this platform."""
        proxies = {"http_proxy", "https_proxy", "all_proxy"}
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in proxies and not k.startswith("LAP_")
        }
        env.update(LAP_URL=self.url, LAP_KEY=self.key, LAP_CONFIG_DIR=str(config_dir), TERM="xterm")
        env.update(extra)
        return env

    def tty_url(self, session: dict) -> str:
        return f"ws://127.0.0.1:{self.port}{session['tty_url']}"
