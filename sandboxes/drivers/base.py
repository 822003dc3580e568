"""The sandbox driver interface: the one seam between services and sandboxes.

Services (``sandboxes/services.py``, ``pool/services.py``) are the only callers.
Drivers get plain dataclasses, never Django models, so they stay importable in
processes that have no Django (the Kubernetes test double, benchmarks).

Every driver promises:

- ``create(spec)`` is idempotent on ``spec.sandbox_id``: creating a sandbox that
  already exists returns its handle instead of making a second one.
- ``wait_ready(handle, timeout)`` returns once the runner answers ``/healthz``,
  or raises ``DriverError`` (with the reason, e.g. an image pull failure).
- ``endpoints(handle)`` says where the platform reaches the runner and the vault.
- ``destroy(handle)`` kills every process of the sandbox and removes what it
  owned; destroying a sandbox that is already gone succeeds.
- ``list()`` returns every sandbox the driver knows, with its labels, so
  reconcile can find orphans and sandboxes that died (with the reason). A
  ``pending`` sandbox carries a reason only when it is stuck for good (an image
  that cannot be pulled): reconcile then fails its session with that reason.
- ``vault_restart(handle)`` starts the sandbox's vault sidecar again if it died (returns
  whether it did; the platform then pushes the bundle again). A driver whose runtime
  restarts the sidecar itself (Kubernetes native sidecars) returns False.
- ``sandbox_env()`` gives the variables every harness env must carry to use the
  sandbox's layout and own services (``PATH`` with the harness tools, ``HOME``, the
  vault proxy address, the vault's CA bundle; ``HARNESS_PYTHONPATH`` where API harnesses
  find the Agent SDK); the platform merges them into the env it passes to ``/start``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

LABEL_SANDBOX = "lap.sandbox/id"
LABEL_SESSION = "lap.session/id"
LABEL_AGENT = "lap.agent/id"
LABEL_POOL_HARNESS = "lap.pool/harness"

# Every sandbox, whatever the driver, offers the harness its vault proxy on this loopback
# address and the vault's trust bundle (the platform root plus the system CAs) at this path.
PROXY_ADDRESS = "127.0.0.1:3128"
TRUST_BUNDLE_PATH = "/etc/lap/ca-bundle.pem"
# What the harness needs to reach the outside through the proxy (merged into the /start env).
SANDBOX_ENV = {
    "HTTPS_PROXY": f"http://{PROXY_ADDRESS}",
    "https_proxy": f"http://{PROXY_ADDRESS}",
    "HTTP_PROXY": f"http://{PROXY_ADDRESS}",
    "http_proxy": f"http://{PROXY_ADDRESS}",
    "NO_PROXY": "localhost,127.0.0.1",
    "no_proxy": "localhost,127.0.0.1",
    "NODE_USE_ENV_PROXY": "1",
    # The vault's CA: the root the sidecar's per-sandbox intermediate chains to.
    "SSL_CERT_FILE": TRUST_BUNDLE_PATH,
    "REQUESTS_CA_BUNDLE": TRUST_BUNDLE_PATH,
    "CURL_CA_BUNDLE": TRUST_BUNDLE_PATH,
    "GIT_SSL_CAINFO": TRUST_BUNDLE_PATH,
    "NODE_EXTRA_CA_CERTS": TRUST_BUNDLE_PATH,
}


class DriverError(Exception):
    """A driver operation failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class DriverUnavailable(DriverError):
    """The driver cannot work on this machine at all (e.g. bubblewrap is missing)."""


@dataclass(frozen=True)
class EgressPolicy:
    """Host rules: exact names, ``*.suffix`` wildcards, IPs or CIDRs."""

    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    memory_mb: int = 2048
    pids: int = 512
    cpus: float = 2.0


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    harness: str
    runner_token: str
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Key material for the vault: "key.txt" (sealing key) and "ca.pem" (intermediate key and
    # chain) for the sidecar alone, "ca-bundle.pem" (root + system CAs) for the agent.
    vault_material: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxHandle:
    sandbox_id: str
    driver: str
    ref: str  # driver-specific: a directory for local, a pod name for kubernetes


@dataclass(frozen=True)
class Endpoints:
    runner_url: str  # "unix:///path/to/runner.sock" or "http://10.1.2.3:7681"
    vault_url: str | None = None  # the vault's control endpoint


@dataclass(frozen=True)
class SandboxInfo:
    handle: SandboxHandle
    labels: dict[str, str]
    state: str  # "pending" | "running" | "exited"
    reason: str = ""  # why it exited or is stuck for good, e.g. "OOMKilled", "ImagePullBackOff"


class SandboxDriver(Protocol):
    name: str

    def create(self, spec: SandboxSpec) -> SandboxHandle: ...

    def wait_ready(self, handle: SandboxHandle, timeout: float) -> None: ...

    def endpoints(self, handle: SandboxHandle) -> Endpoints: ...

    def destroy(self, handle: SandboxHandle) -> None: ...

    def list(self) -> list[SandboxInfo]: ...

    def vault_restart(self, handle: SandboxHandle) -> bool: ...

    def sandbox_env(self) -> dict[str, str]: ...
