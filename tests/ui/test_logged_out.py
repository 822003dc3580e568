"""A page that polls a part of itself (the sessions list, a session's progress and vault
panel), in a real browser, when its user is logged out meanwhile (in another tab, or the
login expired): the page goes to the login form instead of showing it inside the part."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module", autouse=True)
def _database_beside_playwright():
    """As in test_chat.py: Playwright's event loop on the test's thread is not the ORM's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


def test_a_polling_page_goes_to_the_login_form_once_logged_out(browser, live_server, user):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/sessions/?status=ready")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice-password")
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Sessions")
        context.clear_cookies()  # logged out, as by the other tab's Log out
        expect(page).to_have_url(re.compile(r"/login/\?next=/sessions/%3Fstatus%3Dready$"))
        expect(page.locator("h1")).to_have_text("Log in")
    finally:
        context.close()
