from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from django.core.management.base import BaseCommand
from django_q.tasks import async_task

from pool.services import pool_ensure_schedules
from sandboxes.services import ensure_schedules

WEBSOCKET_MAX_MESSAGE = 16 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Serve the platform: daphne (HTTP + WebSocket) and the django-q2 cluster as child "
        "processes. SIGINT/SIGTERM are forwarded; when either child exits, so does the other. "
        "With --no-worker only daphne runs (the cluster runs elsewhere: `manage.py qcluster`)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="serve HTTP + WebSocket only; the task cluster runs in its own process or pod",
        )

    def handle(self, *args, host: str, port: int, no_worker: bool, **options) -> None:
        ensure_schedules()
        pool_ensure_schedules()
        # Fill the warm pool as soon as the cluster runs, not at the schedule's first tick.
        async_task("pool.tasks.pool_top_up")
        manage = [sys.executable, "-m", "django"]
        daphne = [
            *(sys.executable, "-m", "daphne", "-b", host, "-p", str(port)),
            # Above daphne's 1 MiB default, so an oversized terminal message reaches the bridge
            # and is refused with close code 4413 and a reason, instead of a dropped connection.
            *("--websocket-max-message-size", str(WEBSOCKET_MAX_MESSAGE)),
            *("--websocket-max-frame-size", str(WEBSOCKET_MAX_MESSAGE)),
        ]
        # Own sessions: a terminal's Ctrl-C reaches only us, and we forward it once.
        children = [subprocess.Popen([*daphne, "lapsite.asgi:application"], start_new_session=True)]
        if not no_worker:
            children.append(subprocess.Popen([*manage, "qcluster"], start_new_session=True))

        stopping: list[int] = []

        def forward(signum: int, frame: object) -> None:
            stopping.append(signum)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        self.stdout.write(
            f"LAP is serving at http://{host}:{port}/  (admin /admin/, docs /api/docs/)"
        )
        self.stdout.flush()
        pid, status = os.wait()
        for child in children:
            if child.pid != pid and child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            # A child that died abruptly may leave its own workers behind (the q
            # cluster's); each child leads its own session, so its group is ours to end.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        if stopping:
            return  # asked to stop: however the children ended, that is a clean exit
        code = os.waitstatus_to_exitcode(status)
        name = "daphne" if pid == children[0].pid else "qcluster"
        self.stderr.write(f"{name} exited unexpectedly (status {code}); stopped the other")
        raise SystemExit(code if code > 0 else 1)
