"""Fixtures for the local driver: a traversable state dir, a driver, sandboxes destroyed after.

Every sandbox gets vault key material (a fresh root and intermediate, a sealing key), so its
sidecar starts; ``push_egress`` seals and pushes a secret-less bundle with egress rules.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from sandboxes.drivers.base import SandboxHandle, SandboxSpec
from sandboxes.drivers.local import LocalDriver
from vault import ca
from vault.sidecar_client import HttpSidecarClient

from .procs import UID_BASE, sandbox_processes


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bwrap") and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")


@pytest.fixture
def lap_home() -> Iterator[Path]:
    """A state dir like LAP_HOME (0711), short enough for AF_UNIX socket paths."""
    base = Path(tempfile.mkdtemp(prefix="lap-", dir="/tmp"))
    base.chmod(0o711)
    home = base / "home"
    home.mkdir(mode=0o711)
    yield home
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def driver(lap_home: Path) -> LocalDriver:
    return LocalDriver(lap_home, uid_base=UID_BASE)


@pytest.fixture
def make_sandbox(driver: LocalDriver) -> Iterator:
    """``make_sandbox(**spec_fields) -> (handle, spec)``; every sandbox is destroyed after."""
    made: list[SandboxHandle] = []

    def make(**fields) -> tuple[SandboxHandle, SandboxSpec]:
        fields.setdefault("sandbox_id", str(uuid.uuid4()))
        fields.setdefault("harness", "shell")
        fields.setdefault("runner_token", uuid.uuid4().hex)
        fields.setdefault("vault_material", vault_material(fields["sandbox_id"]))
        spec = SandboxSpec(**fields)
        handle = driver.create(spec)
        made.append(handle)
        return handle, spec

    yield make
    for handle in made:
        driver.destroy(handle)


def vault_material(sandbox_id: str) -> dict[str, bytes]:
    root = ca.root_generate()
    return {
        "key.txt": Fernet.generate_key(),
        "ca.pem": ca.intermediate_issue(root, sandbox_id).ca_pem,
        "ca-bundle.pem": ca.trust_bundle(root.cert_pem),
    }


def push_egress(
    driver: LocalDriver, handle: SandboxHandle, spec: SandboxSpec, version: int = 1
) -> None:
    """Give the sandbox's sidecar a bundle with no secrets and ``spec.egress`` as its rules."""
    bundle = {
        "sandbox_id": spec.sandbox_id,
        "version": version,
        "secrets": [],
        "egress": {
            "allow_out": list(spec.egress.allow_out),
            "deny_out": list(spec.egress.deny_out),
        },
    }
    sealed = Fernet(spec.vault_material["key.txt"]).encrypt(json.dumps(bundle).encode())
    client = HttpSidecarClient(driver.endpoints(handle).vault_url or "")
    try:
        assert client.put_bundle(sealed)[0] == 204
    finally:
        client.close()


@pytest.fixture(scope="module", autouse=True)
def _no_stray_processes() -> Iterator[None]:
    yield
    assert sandbox_processes() == [], "sandbox processes survived the test module"
