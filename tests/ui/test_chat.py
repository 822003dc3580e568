"""The chat page of an API harness in a real browser, frame by frame: the browser's requests
to ``/messages``, ``/message_stream``, ``/abort`` and ``/restart`` are answered here by
Playwright (``page.route``) with frames in the platform's shapes, so every rendering rule is
pinned without a harness; everything else (login, the page, its script) is the real UI served
by Django with the FakeDriver behind it. ``test_browser_chat.py`` runs the same page against a
real Agent SDK session.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Route, expect

from agents.services import agent_create
from sandboxes.models import Session
from sandboxes.services import session_bring_up, session_create, session_stop
from tests.ui.conftest import logged_in_page, screenshot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("database_beside_playwright"),
]

HISTORY = [
    {
        "info": {"id": "u1", "role": "user", "status": "complete"},
        "parts": [{"type": "text", "text": "hello"}],
    },
    {
        "info": {"id": "a1", "role": "assistant", "status": "complete"},
        "parts": [{"id": "p1", "type": "text", "text": "Hi! What shall we build?"}],
    },
]


def sse(*frames: dict) -> str:
    return "".join(f"data: {json.dumps(frame)}\n\n" for frame in frames)


def part_event(part: dict, **extra) -> dict:
    return {
        "type": "harness_event",
        "event": {"type": "message.part.updated", "properties": {"part": part, **extra}},
    }


REPLY = sse(
    {"type": "ready"},
    {
        "type": "harness_event",
        "event": {"type": "message.updated", "properties": {"info": {"id": "u2", "role": "user"}}},
    },
    part_event({"id": "u2p", "messageID": "u2", "type": "text", "text": "list the files"}),
    part_event({"id": "t1", "messageID": "a2", "type": "text", "text": "Let me "}),
    part_event(
        {
            "id": "tool1",
            "messageID": "a2",
            "type": "tool",
            "tool": "bash",
            "state": {"status": "completed", "input": {"command": "ls"}, "output": "README.md"},
        }
    ),
    part_event({"id": "t1", "messageID": "a2", "type": "text", "text": "Let me look: one file."}),
    {"type": "done"},
)


@pytest.fixture
def chat_session(user):
    agent = agent_create(user=user, name="chat-agent", harness_id="opencode")
    session = session_create(agent=agent, user=user)
    session_bring_up(session.id)
    return session


def chat_page(browser, live_server, session, answer: Callable[[Route], None]):
    """The session's page, logged in as alice, with its API requests answered by ``answer``."""
    return logged_in_page(
        browser,
        live_server,
        f"/sessions/{session.id}/",
        lambda page: page.route(f"**/api/v1/managed_agents/sessions/{session.id}/*", answer),
    )


def test_chat_shows_history_streams_a_reply_and_folds_tool_calls(
    browser, live_server, chat_session
):
    api = f"/api/v1/managed_agents/sessions/{chat_session.id}"
    sent: list[tuple[str, dict, str | None]] = []

    def answer(route: Route) -> None:
        request = route.request
        path = request.url.removeprefix(live_server.url)
        if request.method == "GET" and path == f"{api}/messages":
            route.fulfill(json=HISTORY)
            return
        sent.append((path, request.post_data_json, request.headers.get("x-csrftoken")))
        if path == f"{api}/message_stream":
            route.fulfill(body=REPLY, content_type="text/event-stream")
        else:
            route.fulfill(json={"ok": True})

    with chat_page(browser, live_server, chat_session, answer) as page:
        log = page.locator("#chat-log")
        expect(log.locator(".msg-assistant")).to_contain_text("Hi! What shall we build?")
        page.fill("#chat-input", "list the files")
        page.keyboard.press("Enter")
        reply = log.locator(".msg-assistant").nth(1)
        expect(reply).to_contain_text("Let me look: one file.")
        expect(reply).not_to_have_class("streaming")
        assert reply.locator(".part-text").count() == 1  # the part was replaced, not repeated
        assert log.locator(".msg-user").count() == 2  # the harness's echo of it is not shown
        tool = reply.locator("details.part-tool")
        expect(tool.locator("summary")).to_have_text("bash · completed")
        expect(tool.locator("pre").first).not_to_be_visible()  # folded until opened
        tool.locator("summary").click()
        expect(tool.locator("pre").nth(1)).to_have_text("README.md")
        screenshot(page, "session-chat")

        path, body, token = sent[0]
        assert path == f"{api}/message_stream" and body == {"text": "list the files"}
        assert token  # the CSRF token the platform's session authentication asks for


def test_restart_shows_the_session_coming_up_again(browser, live_server, chat_session):
    """After Restart the session is creating in a new sandbox: the page shows its bring-up
    (and then the chat again), not the old chat, whose next message would be refused."""
    api = f"/api/v1/managed_agents/sessions/{chat_session.id}"
    sent: list[str] = []

    def answer(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=HISTORY)
            return
        sent.append(route.request.url.removeprefix(live_server.url))
        Session.objects.filter(pk=chat_session.pk).update(status=Session.Status.CREATING)
        route.fulfill(json={"id": str(chat_session.id), "status": "creating"})

    with chat_page(browser, live_server, chat_session, answer) as page:
        expect(page.locator("#chat-send")).to_be_enabled()
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#chat-restart")
        expect(page.locator(".session-main h2")).to_have_text("Starting…")
        expect(page.locator("#chat")).to_have_count(0)
        assert sent == [f"{api}/restart"]


def test_the_status_badge_follows_a_session_stopped_elsewhere(browser, live_server, chat_session):
    """A message refused with 409 (the session is not running): the badge asks the API."""

    def answer(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=HISTORY)
            return
        route.fulfill(status=409, json={"error": "session is dead", "code": "not_ready"})

    with chat_page(browser, live_server, chat_session, answer) as page:
        badge = page.locator("#session-status .status")
        expect(badge).to_have_text("ready")
        expect(page.locator("#chat-send")).to_be_enabled()
        session_stop(chat_session)  # as from another tab, or `lap stop`
        page.fill("#chat-input", "hello?")
        page.keyboard.press("Enter")
        expect(page.locator("#chat-log")).to_contain_text("session is dead")
        expect(badge).to_have_text("dead")


def test_a_message_waits_for_the_history(browser, live_server, chat_session):
    """Enter before the log has loaded sends nothing (the turn would land above the history);
    once it has, the same text goes and its turn follows the history."""
    api = f"/api/v1/managed_agents/sessions/{chat_session.id}"
    held: list[Route] = []
    sent: list[str] = []

    def answer(route: Route) -> None:
        path = route.request.url.removeprefix(live_server.url)
        if path == f"{api}/messages":
            held.append(route)  # answered below, after the early Enter
            return
        sent.append(path)
        route.fulfill(body=REPLY, content_type="text/event-stream")

    with chat_page(browser, live_server, chat_session, answer) as page:
        expect(page.locator("#chat-send")).to_be_disabled()
        page.fill("#chat-input", "list the files")
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)  # time enough for a fetch the page should not make
        assert sent == []

        held[0].fulfill(json=HISTORY)
        expect(page.locator("#chat-send")).to_be_enabled()
        page.keyboard.press("Enter")
        log = page.locator("#chat-log .msg")
        expect(log.last).to_contain_text("Let me look: one file.")
        expect(log).to_have_count(4)
        assert [log.nth(i).inner_text().split("\n")[0] for i in range(4)] == [
            "USER",
            "ASSISTANT",
            "USER",
            "ASSISTANT",
        ]
        expect(log.nth(1)).to_contain_text("Hi! What shall we build?")
        assert sent == [f"{api}/message_stream"]


def retry_event(attempt: int, **extra) -> dict:
    status = {"type": "retry", "attempt": attempt, "message": "Cannot connect to API", **extra}
    return {
        "type": "harness_event",
        "event": {"type": "session.status", "properties": {"status": status}},
    }


def test_a_retried_model_request_is_shown_until_the_model_answers(
    browser, live_server, chat_session
):
    replies = iter(
        [
            sse(
                {"type": "ready"}, retry_event(1), retry_event(2, maxAttempts=10), {"type": "done"}
            ),
            sse(
                {"type": "ready"},
                retry_event(1),
                part_event({"id": "t9", "messageID": "a9", "type": "text", "text": "Back."}),
                {"type": "done"},
            ),
        ]
    )

    def answer(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=[])
        else:
            route.fulfill(body=next(replies), content_type="text/event-stream")

    with chat_page(browser, live_server, chat_session, answer) as page:
        log = page.locator("#chat-log")
        expect(page.locator("#chat-send")).to_be_enabled()  # the (empty) history is in
        page.fill("#chat-input", "anyone there?")
        page.keyboard.press("Enter")
        waiting = log.locator(".msg-assistant").nth(0)
        expect(waiting).not_to_have_class("streaming")
        expect(waiting.locator(".part-retry")).to_have_text(
            "model request failed, retrying (attempt 2 of 10): Cannot connect to API"
        )
        screenshot(page, "session-chat-retry")
        expect(page.locator("#chat-send")).to_be_enabled()
        page.fill("#chat-input", "and now?")
        page.keyboard.press("Enter")
        answered = log.locator(".msg-assistant").nth(1)
        expect(answered).to_contain_text("Back.")
        expect(answered).not_to_have_class("streaming")
        assert answered.locator(".part-retry").count() == 0


def test_a_turn_that_ended_in_an_error_says_why_live_and_in_the_history(
    browser, live_server, chat_session
):
    aborted = {"name": "MessageAbortedError", "data": {"message": "the turn was aborted"}}
    history = [
        *HISTORY,
        {
            "info": {"id": "a2", "role": "assistant", "status": "failed", "error": aborted},
            "parts": [],
        },
    ]
    failed = {"name": "APIError", "data": {"message": "invalid x-api-key"}}
    reply = sse(
        {"type": "ready"}, {"type": "done", "message": {"info": {"error": failed}, "parts": []}}
    )

    def answer(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json=history)
        else:
            route.fulfill(body=reply, content_type="text/event-stream")

    with chat_page(browser, live_server, chat_session, answer) as page:
        log = page.locator("#chat-log")
        expect(log.locator(".msg-assistant").nth(1).locator(".part-error")).to_have_text("aborted")
        page.fill("#chat-input", "hello?")
        page.keyboard.press("Enter")
        live = log.locator(".msg-assistant").nth(2)
        expect(live.locator(".part-error")).to_have_text("invalid x-api-key")
        expect(live).to_have_class(re.compile(r"\bfailed\b"))
