"""Fixtures for the local driver: a traversable state dir, a driver, sandboxes destroyed after."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxes.drivers.base import SandboxHandle, SandboxSpec
from sandboxes.drivers.local import LocalDriver

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
        spec = SandboxSpec(**fields)
        handle = driver.create(spec)
        made.append(handle)
        return handle, spec

    yield make
    for handle in made:
        driver.destroy(handle)


@pytest.fixture(scope="module", autouse=True)
def _no_stray_processes() -> Iterator[None]:
    yield
    assert sandbox_processes() == [], "sandbox processes survived the test module"
