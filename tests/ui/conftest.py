"""Browser fixtures: Debian's Chromium driven by Playwright's Python API (never `playwright
install`: the browser comes from scripts/install-system-deps)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="module")
def database_beside_playwright():
    """Playwright's sync API keeps an event loop running on the test's thread, which Django
    takes for an async context; the test's database calls never run on that loop."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@contextlib.contextmanager
def logged_in_page(browser, live_server, path: str, prepare: Callable | None = None) -> Iterator:
    """``path`` on the live server in a new browser context, logged in as alice; ``prepare``
    gets the page first (to answer some of its requests with ``page.route``)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        if prepare:
            prepare(page)
        page.goto(f"{live_server.url}{path}")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice-password")
        page.click("button[type=submit]")
        yield page
    finally:
        context.close()
