"""Test doubles for the sandbox driver and the runner client (tests only).

``FakeDriver`` keeps sandboxes in memory and follows the driver contract in
``sandboxes/drivers/base.py``. Tests steer it with ``fail`` (make an operation
raise ``DriverError``), ``before`` (run a callback at the start of an
operation, e.g. to stop a session mid-bring-up), ``exit``, ``vanish`` and ``kill_vault``.
Runner failures are ``RunnerError`` as with the real client: ``fail_runner``
makes ``/start`` answer with one (a ``before("exec"|"turn", …)`` callback may raise one for
other calls). ``/exec`` commands are recorded on the sandbox (``execs``) and exit 0 unless
``exec_handler(argv, env)`` answers ``(code, stdout, stderr)`` (``None``: the default).
Each sandbox's vault is the sidecar's own ``Vault`` (``sidecar.control``, no mitmproxy), so
pushes are unsealed and version-checked for real; ``FakeSidecarClient`` speaks for it at
``fake-vault://<sandbox id>``.

An API harness (``/start`` with ``api``) gets a ``FakeConversation``: each turn answers
``echo: <text>`` word by word as opencode-shaped events, then ``done``. Tests steer it with
``FakeDriver.hold_turns`` (a ``threading.Event``: turns stop after their first word until it
is set or they are aborted) and ``FakeDriver.turn_error`` (turns end with that error). It
polls plain lists, so it works from any thread and event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import AsyncIterator, Callable, Iterator
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
    execs: list[dict[str, Any]] = field(default_factory=list)  # bodies of the runner's /exec
    vault: Vault | None = None
    conversation: FakeConversation | None = None  # when started as an API harness
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
    exec_handler: Callable[[list[str], dict[str, str]], tuple[int, str, str] | None] | None = None
    hold_turns: threading.Event | None = None
    turn_error: str | None = None

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
        conversation = self.sandbox.conversation
        return {
            "ok": True,
            "started": self.sandbox.started is not None,
            "exit_code": None,
            "turn": conversation is not None and conversation.busy,
        }

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        cols: int,
        rows: int,
        *,
        api: str | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> int:
        self.driver._enter("start")
        if self.sandbox.started is not None:
            raise RunnerError("already started", status=409)
        self.sandbox.started = {"argv": argv, "env": env, "cwd": cwd, "cols": cols, "rows": rows}
        if api is not None:
            self.sandbox.started.update(api=api, history=history or [])
            self.sandbox.conversation = FakeConversation(self.driver, self.sandbox.spec.sandbox_id)
        return {"pid": 4242}

    def _conversation(self) -> FakeConversation:
        if self.sandbox.conversation is None:
            raise RunnerError("no API harness: the harness runs in a terminal", status=409)
        return self.sandbox.conversation

    async def turn(self, parts: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        self.driver._enter("turn")
        conversation = self._conversation()
        async for line in conversation.turn(parts):
            self._check_alive()
            yield line

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        conversation = self._conversation()
        index = conversation.turn_start if conversation.busy else len(conversation.lines)
        while True:
            self._check_alive()
            while index < len(conversation.lines):
                index += 1
                yield conversation.lines[index - 1]
            await asyncio.sleep(0.01)

    def abort(self) -> bool:
        return self._conversation().abort()

    def _check_alive(self) -> None:
        if self.sandbox.spec.sandbox_id not in self.driver.sandboxes:
            raise RunnerError("runner unreachable: the sandbox is gone")

    def exec(
        self,
        argv: list[str],
        timeout: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        self.driver._enter("exec")
        env = dict(
            self.sandbox.started["env"] if env is None and self.sandbox.started else env or {}
        )
        self.sandbox.execs.append({"argv": argv, "env": env, "cwd": cwd, "timeout": timeout})
        handler = self.driver.exec_handler
        code, out, err = (handler(argv, env) if handler else None) or (0, "", "")
        if out:
            yield {"stream": "stdout", "data": out}
        if err:
            yield {"stream": "stderr", "data": err}
        yield {"exit_code": code}

    def recording(self) -> bytes | None:
        """A one-line asciicast once the harness started (the real runner records the PTY)."""
        if self.sandbox.started is None:
            return None
        return b'{"version": 2, "width": 120, "height": 40}\n[0.1, "o", "fake"]\n'

    def close(self) -> None:
        """Nothing to release; the real client closes its connection pool."""


@dataclass
class FakeConversation:
    """The API harness of a ``FakeDriver`` sandbox: echoes each turn (see the module doc)."""

    driver: FakeDriver
    sandbox_id: str
    turns: list[list[dict[str, Any]]] = field(default_factory=list)  # the parts of each turn
    lines: list[dict[str, Any]] = field(default_factory=list)  # every line, for /events
    turn_start: int = 0  # index in ``lines`` where the turn in flight began
    busy: bool = False
    aborted: bool = False

    def abort(self) -> bool:
        if not self.busy:
            return False
        self.aborted = True
        return True

    def _emit(self, line: dict[str, Any]) -> dict[str, Any]:
        self.lines.append(line)
        return line

    async def turn(self, parts: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        if self.busy:
            raise RunnerError("a turn is already in flight", status=409)
        self.busy, self.aborted, self.turn_start = True, False, len(self.lines)
        self.turns.append(parts)
        try:
            number = len(self.turns)
            part = {"id": f"prt_{number}", "messageID": f"msg_{number}", "type": "text", "text": ""}
            yield self._emit({"type": "event", "event": _part_event(part)})
            words = ("echo: " + " ".join(p["text"] for p in parts)).split(" ")
            for index, word in enumerate(words):
                delta = word if index == 0 else " " + word
                part = {**part, "text": part["text"] + delta}
                yield self._emit({"type": "event", "event": _delta_event(part, delta)})
                hold = self.driver.hold_turns
                while hold is not None and not hold.is_set() and not self.aborted:
                    if self.sandbox_id not in self.driver.sandboxes:
                        raise RunnerError("runner unreachable: the sandbox is gone")
                    await asyncio.sleep(0.01)
                if self.aborted:
                    break
            if self.driver.turn_error:
                yield self._emit({"type": "error", "error": self.driver.turn_error})
                return
            info: dict[str, Any] = {"id": f"msg_{number}", "role": "assistant", "cost": 0.01}
            if self.aborted:
                info["error"] = {"name": "MessageAbortedError", "data": {"message": "aborted"}}
            message = {"info": info, "parts": [part]}
            yield self._emit({"type": "done", "message": message})
        finally:
            self.busy = False


def _part_event(part: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message.part.updated", "properties": {"part": part}}


def _delta_event(part: dict[str, Any], delta: str) -> dict[str, Any]:
    properties = {"messageID": part["messageID"], "partID": part["id"], "field": "text"}
    return {"type": "message.part.delta", "properties": {**properties, "delta": delta}}
