"""The chat page against a real API harness: the Agent SDK in a bubblewrap sandbox, talking to
the fake LLM gateway through the vault (the same platform and gateway as
``tests/e2e/test_api_harnesses.py``), driven from headless Chromium.

``test_chat.py`` pins the page's handling of every frame shape; this one proves the page and
the platform's real ``/message_stream``, ``/messages`` and ``/abort`` agree.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from playwright.sync_api import expect

from tests.e2e import test_tui_harnesses as tui
from tests.fakellm import Text, ToolCall, Turn
from tests.harness_tools import require_cli
from tests.ui.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.bwrap, pytest.mark.timeout(600)]

SLOW = 180_000  # ms: a cold sandbox with the SDK, on a loaded 2-core machine
# The same module fixtures as the harness tests: the CA the vault trusts, the fake gateway
# demanding the real key, the live platform.
ca = tui.ca
gateway = tui.gateway
platform = tui.platform


@pytest.fixture(scope="module")
def sdk_session(platform):
    require_cli("claude-agent-sdk")
    agent = platform.create_agent(
        "ui-sdk",
        harness_id="claude-agent-sdk",
        model="claude-sonnet-4-5",
        prompt="Answer in one short sentence.",
        allow_out=["127.0.0.1"],
    )
    created = platform.api("POST", f"/agents/{agent['name']}/session", json={})
    assert created.status_code == 201, created.text
    session = platform.wait_status(created.json()["id"], timeout=SLOW / 1000)
    assert session["status"] == "ready", session
    return session


@pytest.fixture(scope="module")
def password(platform):
    return platform.create_user("ui-chat-user")


@pytest.fixture
def page(browser, platform, password):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(SLOW)
    page.goto(platform.url + "/login/")
    page.fill("#id_username", "ui-chat-user")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    yield page
    context.close()


def test_a_person_chats_with_the_agent_sdk_in_the_browser(page, platform, gateway, sdk_session):
    gateway.script(
        ToolCall("Bash", {"command": "echo from-the-sandbox"}), "The sandbox said hello."
    )
    page.goto(f"{platform.url}/sessions/{sdk_session['id']}/")
    log = page.locator("#chat-log")
    expect(page.locator("#chat-send")).to_be_enabled()  # the history is on the page
    page.fill("#chat-input", "Run the command.")
    page.keyboard.press("Enter")

    reply = log.locator(".msg-assistant").last
    expect(reply).to_contain_text("The sandbox said hello.", timeout=SLOW)
    expect(reply).not_to_have_class("streaming")
    tool = reply.locator("details.part-tool")
    expect(tool.locator("summary")).to_contain_text("Bash")
    tool.locator("summary").click()
    expect(tool).to_contain_text("from-the-sandbox")
    screenshot(page, "session-chat-sdk")

    # The durable log holds the turn the page showed; a reload shows it from there.
    turns = platform.api("GET", f"/sessions/{sdk_session['id']}/messages").json()
    assert [m["info"]["role"] for m in turns][-2:] == ["user", "assistant"]
    page.reload()
    expect(log.locator(".msg-assistant").last).to_contain_text("The sandbox said hello.")
    assert tui.REAL_KEY not in page.content()


def test_abort_stops_a_turn_from_the_browser(page, platform, gateway, sdk_session):
    held = threading.Event()
    gateway.script(Turn([Text("A long story that never ends…")], hold=held))
    since = len(gateway.requests)
    try:
        page.goto(f"{platform.url}/sessions/{sdk_session['id']}/")
        expect(page.locator("#chat-send")).to_be_enabled()  # the history is on the page
        page.fill("#chat-input", "Take your time.")
        page.keyboard.press("Enter")
        reply = page.locator("#chat-log .msg-assistant").last
        expect(reply).to_have_class(re.compile("streaming"))
        # The held answer's first delta on the page: the harness is mid-turn, streaming.
        expect(reply).to_contain_text("A long", timeout=SLOW)
        seen = [(r.path, r.scripted, r.json) for r in gateway.requests[since:]]
        assert [scripted for _, scripted, _ in seen].count(True) == 1, seen
        with page.expect_response(re.compile(r"/abort$")) as answered:
            page.click("#chat-abort")
        assert answered.value.json() == {"ok": True, "aborted": True}
        expect(reply).not_to_have_class(re.compile("streaming"))
        expect(page.locator("#chat-log .notice")).to_contain_text("aborted")
    finally:
        held.set()
    deadline = time.monotonic() + 60
    while True:  # the platform settles the log once the runner reports the aborted turn
        log = platform.api("GET", f"/sessions/{sdk_session['id']}/messages").json()[-2:]
        statuses = [entry["info"]["status"] for entry in log]
        if "pending" not in statuses or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert statuses == ["complete", "failed"], log
