"""Test doubles for the sandbox driver and the runner client (tests only).

``FakeDriver`` keeps sandboxes in memory and follows the driver contract in
``sandboxes/drivers/base.py``. Tests steer it with ``fail`` (make an operation
raise ``DriverError``), ``before`` (run a callback at the start of an
operation, e.g. to stop a session mid-bring-up), ``exit`` and ``vanish``.
Runner failures are ``RunnerError`` as with the real client: ``fail_runner``
makes ``/start`` answer with one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandboxes.drivers.base import (
    LABEL_SANDBOX,
    DriverError,
    Endpoints,
    SandboxHandle,
    SandboxInfo,
    SandboxSpec,
)
from sandboxes.runner_client import RunnerError


@dataclass
class FakeSandbox:
    spec: SandboxSpec
    state: str = "running"
    reason: str = ""
    started: dict[str, Any] | None = None  # the body of the runner's /start

    @property
    def handle(self) -> SandboxHandle:
        return SandboxHandle(self.spec.sandbox_id, FakeDriver.name, f"fake-{self.spec.sandbox_id}")


@dataclass
class FakeDriver:
    name = "fake"
    sandboxes: dict[str, FakeSandbox] = field(default_factory=dict)
    destroyed: list[str] = field(default_factory=list)
    failures: dict[str, DriverError] = field(default_factory=dict)
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)

    def fail(self, operation: str, message: str, *, retryable: bool = False) -> None:
        self.failures[operation] = DriverError(message, retryable=retryable)

    def before(self, operation: str, callback: Callable[[], None]) -> None:
        self.hooks[operation] = callback

    def _enter(self, operation: str) -> None:
        hook = self.hooks.pop(operation, None)
        if hook is not None:
            hook()
        if operation in self.failures:
            raise self.failures[operation]

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        self._enter("create")
        sandbox = self.sandboxes.setdefault(spec.sandbox_id, FakeSandbox(spec))
        return sandbox.handle

    def wait_ready(self, handle: SandboxHandle, timeout: float) -> None:
        self._enter("wait_ready")

    def sandbox_env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": "http://127.0.0.1:3128"}

    def endpoints(self, handle: SandboxHandle) -> Endpoints:
        self._enter("endpoints")
        return Endpoints(runner_url=f"fake://{handle.sandbox_id}")

    def destroy(self, handle: SandboxHandle) -> None:
        self._enter("destroy")
        if self.sandboxes.pop(handle.sandbox_id, None) is not None:
            self.destroyed.append(handle.sandbox_id)

    def list(self) -> list[SandboxInfo]:
        self._enter("list")
        return [
            SandboxInfo(sandbox.handle, {**sandbox.spec.labels}, sandbox.state, sandbox.reason)
            for sandbox in self.sandboxes.values()
        ]

    # -- steering ----------------------------------------------------------------------

    def exit(self, sandbox_id: str, reason: str = "") -> None:
        self.sandboxes[sandbox_id].state = "exited"
        self.sandboxes[sandbox_id].reason = reason

    def vanish(self, sandbox_id: str) -> None:
        del self.sandboxes[sandbox_id]

    def add_orphan(self, sandbox_id: str, labels: dict[str, str] | None = None) -> None:
        spec = SandboxSpec(
            sandbox_id=sandbox_id,
            harness="shell",
            runner_token="t",
            labels={LABEL_SANDBOX: sandbox_id, **(labels or {})},
        )
        self.sandboxes[sandbox_id] = FakeSandbox(spec)

    def fail_runner(self, message: str, status: int = 400) -> None:
        def refuse() -> None:
            raise RunnerError(message, status=status)

        self.before("start", refuse)

    def runner_client(self, runner_url: str, token: str) -> FakeRunnerClient:
        return FakeRunnerClient(self, runner_url, token)


class FakeRunnerClient:
    """Speaks for the runner of a ``FakeDriver`` sandbox (``fake://<sandbox id>``)."""

    def __init__(self, driver: FakeDriver, runner_url: str, token: str) -> None:
        sandbox = driver.sandboxes.get(runner_url.removeprefix("fake://"))
        if sandbox is None:  # the real client fails the same way, on its first call
            raise RunnerError("runner unreachable: the sandbox is gone")
        self.sandbox = sandbox
        self.driver = driver
        if token != self.sandbox.spec.runner_token:
            raise RunnerError("401 unauthorized", status=401)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "started": self.sandbox.started is not None, "exit_code": None}

    def start(self, argv: list[str], env: dict[str, str], cwd: str, cols: int, rows: int) -> int:
        self.driver._enter("start")
        if self.sandbox.started is not None:
            raise RunnerError("already started", status=409)
        self.sandbox.started = {"argv": argv, "env": env, "cwd": cwd, "cols": cols, "rows": rows}
        return {"pid": 4242}

    def recording(self) -> bytes | None:
        """A one-line asciicast once the harness started (the real runner records the PTY)."""
        if self.sandbox.started is None:
            return None
        return b'{"version": 2, "width": 120, "height": 40}\n[0.1, "o", "fake"]\n'

    def close(self) -> None:
        """Nothing to release; the real client closes its connection pool."""
