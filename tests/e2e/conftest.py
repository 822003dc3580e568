from __future__ import annotations

import shutil

import pytest

from tests.live import LivePlatform


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.bwrap)


@pytest.fixture(scope="session")
def live_platform():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    platform = LivePlatform().start()
    yield platform
    platform.stop()


@pytest.fixture(scope="session")
def shell_agent(live_platform):
    return live_platform.create_agent("e2e-shell")["name"]
