"""The reliability suite: the real platform under fuzzing, load, faults and hostile input.

Every test here runs against real parts (``tests/live.py``: daphne, the django-q2 cluster,
bubblewrap sandboxes, vault sidecars), never the driver test double. The CI-sized variant
asserts the same properties as the full one with smaller numbers; ``LAP_RELIABILITY_FULL=1``
selects the sizes the issue names (README → Benchmarks and reliability).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.live import LivePlatform


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.bwrap)


@pytest.fixture(scope="module")
def start_platform() -> Iterator[Callable[..., LivePlatform]]:
    """``start_platform(prepare=None, **env)``: a platform of this module's own (its state,
    database and sandboxes are not shared), stopped with everything it started after the
    module. ``prepare(platform)`` runs before it starts (e.g. to point it at a proxy)."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    started: list[LivePlatform] = []

    def start(prepare: Callable[[LivePlatform], object] | None = None, **env: str) -> LivePlatform:
        platform = LivePlatform()
        platform.env.update(env)
        started.append(platform)
        if prepare is not None:
            prepare(platform)
        return platform.start()

    yield start
    for platform in started:
        platform.stop()
