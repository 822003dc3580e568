"""A page that polls a part of itself (the sessions list, a session's progress and vault
panel), in a real browser, when its user is logged out meanwhile (in another tab, or the
login expired): the page goes to the login form instead of showing it inside the part."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import logged_in_page

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("database_beside_playwright"),
]


def test_a_polling_page_goes_to_the_login_form_once_logged_out(browser, live_server, user):
    with logged_in_page(browser, live_server, "/sessions/?status=ready") as page:
        expect(page.locator("h1")).to_have_text("Sessions")
        page.context.clear_cookies()  # logged out, as by the other tab's Log out
        expect(page).to_have_url(re.compile(r"/login/\?next=/sessions/%3Fstatus%3Dready$"))
        expect(page.locator("h1")).to_have_text("Log in")
