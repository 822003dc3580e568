"""How big the reliability suite runs: CI-sized unless ``LAP_RELIABILITY_FULL=1``."""

from __future__ import annotations

import os

FULL = os.environ.get("LAP_RELIABILITY_FULL") == "1"


def sized(ci: int, full: int) -> int:
    """``full`` under ``LAP_RELIABILITY_FULL=1``, else the CI size."""
    return full if FULL else ci
