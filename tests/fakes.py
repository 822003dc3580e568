"""Test doubles for the sandbox driver and the runner client (tests only).

``FakeDriver`` keeps sandboxes in memory and follows the driver contract in
``sandboxes/drivers/base.py``. Tests steer it with ``fail`` (make an operation
raise ``DriverError``), ``before`` (run a callback at the start of an
operation, e.g. to stop a session mid-bring-up), ``exit``, ``vanish`` and ``kill_vault``.
Runner failures are ``RunnerError`` as with the real client: ``fail_runner``
makes ``/start`` answer with one. Each sandbox's vault is the sidecar's own ``Vault``
(``sidecar.control``, no mitmproxy), so pushes are unsealed and version-checked for real;
``FakeSidecarClient`` speaks for it at ``fake-vault://<sandbox id>``.
"""

from __future__ import annotations

import hmac
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
from sidecar.control import PushRejected, Vault
from vault.sidecar_client import SidecarUnreachable


@dataclass
class FakeSandbox:
    spec: SandboxSpec
    state: str = "running"
    reason: str = ""
    started: dict[str, Any] | None = None  # the body of the runner's /start
    vault: Vault | None = None
    vault_dead: bool = False

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
        if sandbox.vault is None and "key.txt" in spec.vault_material:
            sandbox.vault = Vault(spec.vault_material["key.txt"], sandbox_id=spec.sandbox_id)
        return sandbox.handle

    def wait_ready(self, handle: SandboxHandle, timeout: float) -> None:
        self._enter("wait_ready")

    def sandbox_env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": "http://127.0.0.1:3128"}

    def endpoints(self, handle: SandboxHandle) -> Endpoints:
        self._enter("endpoints")
        return Endpoints(
            runner_url=f"fake://{handle.sandbox_id}", vault_url=f"fake-vault://{handle.sandbox_id}"
        )

    def destroy(self, handle: SandboxHandle) -> None:
        self._enter("destroy")
        if self.sandboxes.pop(handle.sandbox_id, None) is not None:
            self.destroyed.append(handle.sandbox_id)

    def vault_restart(self, handle: SandboxHandle) -> bool:
        self._enter("vault_restart")
        sandbox = self.sandboxes.get(handle.sandbox_id)
        if sandbox is None or sandbox.state != "running":
            raise DriverError(f"sandbox {handle.sandbox_id} is not running")
        if not sandbox.vault_dead:
            return False
        sandbox.vault = Vault(sandbox.spec.vault_material["key.txt"], sandbox.spec.sandbox_id)
        sandbox.vault_dead = False
        return True

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

    def kill_vault(self, sandbox_id: str) -> None:
        """The sandbox's sidecar dies: unreachable until ``vault_restart``."""
        self.sandboxes[sandbox_id].vault_dead = True

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

    def sidecar_client(self, control_url: str) -> FakeSidecarClient:
        return FakeSidecarClient(self, control_url)

    def vault(self, sandbox_id: str) -> Vault:
        vault = self.sandboxes[sandbox_id].vault
        assert vault is not None, "the sandbox has no vault"
        return vault


class FakeSidecarClient:
    """Speaks for the ``Vault`` of a ``FakeDriver`` sandbox, as the control endpoint does."""

    def __init__(self, driver: FakeDriver, control_url: str) -> None:
        self.driver = driver
        self.sandbox_id = control_url.removeprefix("fake-vault://")

    def _vault(self) -> Vault:
        sandbox = self.driver.sandboxes.get(self.sandbox_id)
        if sandbox is None or sandbox.vault is None or sandbox.vault_dead:
            raise SidecarUnreachable("ConnectError")
        try:
            self.driver._enter("vault")  # fake_driver.fail("vault", ...) makes it unreachable
        except DriverError as error:
            raise SidecarUnreachable(str(error)) from error
        return sandbox.vault

    def health(self) -> tuple[int, dict[str, Any] | None]:
        policy = self._vault().policy
        return 200, {"ok": True, "version": policy.version if policy else None}

    def put_bundle(self, sealed: bytes) -> tuple[int, dict[str, Any] | None]:
        try:
            self._vault().push(sealed)
        except PushRejected as rejected:
            return rejected.status, {"error": rejected.error}
        return 204, None

    def interceptions(
        self, *, after: int, limit: int, read_token: str
    ) -> tuple[int, dict[str, Any] | None]:
        vault = self._vault()
        if not hmac.compare_digest(read_token.encode(), vault.token.encode()):
            return 401, {"error": "unauthorized"}
        records, next_seq = vault.records_after(after, limit)
        return 200, {"records": records, "next": next_seq}

    def close(self) -> None:
        """Nothing to release."""


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
