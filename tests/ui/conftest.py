"""Browser fixtures: Debian's Chromium driven by Playwright's Python API (never `playwright
install`: the browser comes from scripts/install-system-deps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
# Every run saves its screenshots under test-artifacts/ (ignored by git); with
# LAP_UPDATE_SCREENSHOTS=1 it refreshes the committed ones the README shows instead.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("LAP_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "test-artifacts" / "screenshots"
)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: scripts/install-system-deps installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def screenshot(page, name: str) -> None:
    """Save what the page shows now as ``SCREENSHOTS/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
