"""Page behaviour that needs a browser but no sandbox: the real UI served by Django with the
FakeDriver behind it, in Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import WebSocketRoute, expect

from agents.models import Agent
from sandboxes.services import session_stop
from tests.ui.conftest import logged_in_page

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("database_beside_playwright"),
]


def logged_in(browser, live_server, path: str, tty=None):
    """``path`` logged in as alice; ``tty`` answers the terminal's WebSocket (the live server
    speaks no WebSocket)."""
    return logged_in_page(
        browser,
        live_server,
        path,
        (lambda page: page.route_web_socket(re.compile(r".*/tty$"), tty)) if tty else None,
    )


def test_delete_asks_first_then_deletes_the_agent(browser, live_server, agent):
    with logged_in(browser, live_server, f"/agents/{agent.id}/edit/") as page:
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.click("text=Delete agent")
        assert asked and "Delete this agent?" in asked[0]
        expect(page).to_have_url(f"{live_server.url}/agents/{agent.id}/edit/")
        assert Agent.objects.filter(pk=agent.pk).exists()

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("text=Delete agent")
        expect(page).to_have_url(f"{live_server.url}/agents/")
        expect(page.locator(".message")).to_have_text(
            "Agent test-agent deleted; its live sessions were stopped."
        )
        assert not Agent.objects.filter(pk=agent.pk).exists()


def test_the_status_badge_follows_a_session_stopped_elsewhere(browser, live_server, ready_session):
    """The terminal is refused with 4409 (not running): the badge asks the API once."""
    attached: list[WebSocketRoute] = []
    with logged_in(
        browser, live_server, f"/sessions/{ready_session.id}/", lambda ws: attached.append(ws)
    ) as page:
        badge = page.locator("#session-status .status")
        expect(badge).to_have_text("ready")
        expect(page.locator("#terminal-state")).to_have_text("connected")
        session_stop(ready_session)  # as from another tab, or `lap stop`
        attached[-1].close(code=4409, reason="the session is not running")
        expect(page.locator("#terminal-state")).to_have_text(
            "disconnected: the session is not running"
        )
        expect(badge).to_have_text("dead")
        expect(badge).to_have_class("status status-dead")
