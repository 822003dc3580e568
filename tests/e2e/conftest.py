from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.bwrap)


@pytest.fixture(scope="session")
def shell_agent(live_platform):
    return live_platform.create_agent("e2e-shell")["name"]
