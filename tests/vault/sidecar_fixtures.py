"""pytest fixtures for the sidecar tests: one sidecar and upstreams per test session.

``vault_env`` pushes a bundle with 20 secrets (``GH`` for ``localhost``, ``OTHER`` for
``*.example.test``, fillers) and lets tests push newer versions. Every stub and real value ever
pushed is remembered in ``ALL_SECRETS`` and every sidecar logs into ``LOG_DIR``, so the log-leak
test can grep all of it. ``h2_upstream`` is the HTTP/2-only upstream, emptied for each test.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.vault.sidecar_support import (
    H2Upstream,
    Pki,
    Sidecar,
    Upstream,
    make_stub,
    make_value,
)

LOG_DIR = Path(tempfile.mkdtemp(prefix="lap-sidecar-logs-"))
ALL_SECRETS: set[str] = set()
_names = itertools.count()


@dataclass
class VaultEnv:
    pki: Pki
    upstream: Upstream
    sidecar: Sidecar
    sandbox_id: str = "sb-test"
    version: int = 0
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    egress: dict[str, list[str]] = field(
        default_factory=lambda: {"allow_out": ["localhost"], "deny_out": []}
    )

    def stub(self, name: str) -> str:
        return self.secrets[name]["stub"]

    def value(self, name: str) -> str:
        return self.secrets[name]["value"]

    def bundle(self, version: int | None = None, **overrides: Any) -> dict[str, Any]:
        bundle = {
            "sandbox_id": self.sandbox_id,
            "version": self.version + 1 if version is None else version,
            "secrets": list(self.secrets.values()),
            "egress": self.egress,
        }
        bundle.update(overrides)
        return bundle

    def push(self, **overrides: Any) -> None:
        """Push the current secrets and egress as the next version; it must be accepted."""
        bundle = self.bundle(**overrides)
        for secret in bundle["secrets"]:
            ALL_SECRETS.update((secret["stub"], secret["value"]))
        response = self.sidecar.push(bundle)
        assert response.status_code == 204, response.text
        self.version = bundle["version"]
        self.sandbox_id = bundle["sandbox_id"]


def new_secret(name: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "stub": make_stub(name),
        "value": make_value(name),
        "allowed_hosts": hosts,
    }


def start_sidecar(pki: Pki, *extra: str) -> Sidecar:
    workdir = Path(tempfile.mkdtemp(prefix="lap-sidecar-"))
    return Sidecar(workdir, pki, LOG_DIR / f"sidecar-{next(_names)}.log").start(*extra)


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def upstream(pki: Pki) -> Iterator[Upstream]:
    server = Upstream(pki.upstream).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def h2_server(pki: Pki) -> Iterator[H2Upstream]:
    server = H2Upstream(pki.upstream).start()
    yield server
    server.stop()


@pytest.fixture
def h2_upstream(h2_server: H2Upstream, vault_env: VaultEnv) -> H2Upstream:
    """The HTTP/2 upstream, with nothing received yet, behind a freshly pushed ``vault_env``."""
    h2_server.received.clear()
    return h2_server


@pytest.fixture(scope="session")
def session_sidecar(pki: Pki) -> Iterator[Sidecar]:
    sidecar = start_sidecar(pki)
    yield sidecar
    sidecar.stop()


@pytest.fixture
def vault_env(pki: Pki, upstream: Upstream, session_sidecar: Sidecar) -> VaultEnv:
    """A freshly pushed bundle (a new version) with 20 secrets; tests may push more."""
    env = VaultEnv(pki, upstream, session_sidecar, version=_current_version(session_sidecar))
    env.secrets["GH"] = new_secret("GH", ["localhost"])
    env.secrets["OTHER"] = new_secret("OTHER", ["*.example.test"])
    for index in range(18):
        env.secrets[f"FILL{index}"] = new_secret(f"FILL{index}", [f"api{index}.example.test"])
    env.push()
    upstream.received.clear()
    return env


def _current_version(sidecar: Sidecar) -> int:
    with sidecar.control_client() as client:
        return client.get("/healthz").json()["version"] or 0
