"""Issue 9, end to end in a browser: headless Chromium against a live platform with real
bubblewrap sandboxes and the real vault sidecar (tests/live.py).

One walk through the UI as a person would: log in, create an agent with a secret through the
form, start a shell session, type into the xterm.js terminal, resize the window, open the vault
panel, send the secret's stub to a host it is not for and watch the block appear in the log,
survive a platform restart, download the recording, stop the session. Each page is saved as a
screenshot (see conftest), and every page the walk sees is checked for the secret's real value.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest
from playwright.sync_api import Page, expect

from tests.e2e import test_vault
from tests.e2e.test_vault import VIA_VAULT
from tests.live import LivePlatform
from tests.ui.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.bwrap]

SECRET = "ghp_ui_" + secrets.token_hex(16)
STUB = re.compile(r"lap_stub_GITHUB_TOKEN_[0-9a-f]{32}")
SLOW = 60_000  # ms: a sandbox start on a loaded 2-core machine
ROWS_JS = """() => Array.from(document.querySelectorAll('#terminal .xterm-rows > div'),
    row => row.textContent.replace(/\\u00a0/g, ' ').trimEnd())"""


# The vault e2e tests' module fixtures: a trustme CA the sidecars trust for upstreams, an echo
# server with a certificate from it, and a live platform (one of this module's own).
upstream_ca = test_vault.upstream_ca
echo = test_vault.echo
platform = test_vault.platform


@pytest.fixture(scope="module")
def password(platform):
    return platform.create_user("ui-user")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(SLOW)
    yield page
    context.close()


class Seen:
    """Every page body the walk looked at, to check none carries the secret."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.bodies: list[tuple[str, str]] = []

    def __call__(self, name: str) -> None:
        self.bodies.append((name, self.page.content()))
        screenshot(self.page, name)


def terminal_rows(page: Page) -> list[str]:
    return page.evaluate(ROWS_JS)


def wait_for_row(page: Page, pattern: str) -> None:
    """Until a terminal row matches ``pattern`` (a regex, whole row)."""
    page.wait_for_function(
        f"""() => ({ROWS_JS})().some(row => new RegExp({json.dumps(pattern)}).test(row))"""
    )


def type_line(page: Page, line: str) -> None:
    page.locator("#terminal").click()
    page.keyboard.type(line + "\n")


def log_in(page: Page, platform: LivePlatform, password: str, seen: Seen) -> None:
    page.goto(platform.url + "/agents/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/agents/$"))
    seen("login")
    page.fill("#id_username", "ui-user")
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Agents")


def create_agent(page: Page, seen: Seen) -> None:
    page.click("text=New agent")
    page.fill("#id_name", "ui-agent")
    page.select_option("#id_harness_id", "shell")
    page.fill("#id_model", "none")
    page.fill("#id_allow_out", "localhost\n127.0.0.1")
    page.fill("#id_secrets-0-name", "GITHUB_TOKEN")
    page.fill("#id_secrets-0-value", SECRET)
    page.fill("#id_secrets-0-hosts", "evil.test")  # not covered by the allowed egress
    page.click("text=Create agent")
    expect(page.locator(".secrets .field-errors")).to_contain_text(
        "host evil.test is not covered by “Allowed egress”"
    )
    expect(page.locator("#id_secrets-0-value")).to_have_value("")  # never echoed back
    page.locator(".secrets").scroll_into_view_if_needed()
    seen("agent-form-errors")
    page.fill("#id_secrets-0-value", SECRET)
    page.fill("#id_secrets-0-hosts", "localhost")
    page.click("text=Create agent")
    expect(page.locator('tr[data-agent="ui-agent"]')).to_be_visible()
    seen("agents")


def test_a_person_runs_a_shell_session_in_the_browser(browser, page, platform, password, echo):
    seen = Seen(page)
    log_in(page, platform, password, seen)
    create_agent(page, seen)

    # A new session: the progress view, then the terminal once it is ready.
    page.click('tr[data-agent="ui-agent"] >> text=New session')
    expect(page).to_have_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    session_url = page.url
    expect(page.locator("#terminal-state")).to_have_text("connected")
    expect(page.locator("#terminal .xterm-rows")).to_be_visible()

    type_line(page, "echo hi")
    wait_for_row(page, "^hi$")

    # The terminal fills the window and follows it: stty inside the sandbox sees each size.
    terminal = page.locator("#terminal")
    type_line(page, "stty size")
    first = f"{terminal.get_attribute('data-rows')} {terminal.get_attribute('data-cols')}"
    wait_for_row(page, f"^{first}$")
    page.set_viewport_size({"width": 900, "height": 560})
    expect(terminal).not_to_have_attribute("data-cols", first.split()[1])
    type_line(page, "clear; stty size")
    second = f"{terminal.get_attribute('data-rows')} {terminal.get_attribute('data-cols')}"
    assert second != first
    wait_for_row(page, f"^{second}$")
    page.set_viewport_size({"width": 1280, "height": 800})

    # The vault panel: the stub (the one the sandbox sees), never the value.
    page.click("#vault-toggle")
    stub_cell = page.locator("#vault-panel .vault-key .stub")
    expect(stub_cell).to_have_text(STUB)
    stub = stub_cell.inner_text()
    type_line(page, "clear; echo $GITHUB_TOKEN")
    wait_for_row(page, f"^{stub}$")

    # Allowed to localhost; the stub sent to 127.0.0.1, a host it is not for, is blocked.
    type_line(
        page,
        f"clear; {VIA_VAULT}curl -sS -m 20 -o /dev/null -w '%{{http_code}}\\n' "
        f'-H "Authorization: Bearer $GITHUB_TOKEN" https://localhost:{echo.port}/ok',
    )
    wait_for_row(page, "^200$")
    assert echo.authorizations()[-1] == f"Bearer {SECRET}"
    type_line(
        page,
        f'{VIA_VAULT}curl -sS -m 20 -H "Authorization: Bearer $GITHUB_TOKEN" '
        f"https://127.0.0.1:{echo.port}/leak",
    )
    wait_for_row(page, ".*credential_not_allowed_for_host.*")
    blocked = page.locator("#vault-panel .interception.decision-blocked")
    expect(blocked).to_contain_text("127.0.0.1/leak")
    expect(blocked).to_contain_text("credential_not_allowed_for_host")
    expect(blocked).to_contain_text("GITHUB_TOKEN")
    expect(page.locator("#vault-panel .interception.decision-allowed")).to_contain_text(
        "localhost/ok"
    )
    seen("session-terminal-vault")

    # A network blip (here: the platform restarts): the terminal re-attaches by itself and
    # the re-attach brings the earlier output back.
    platform.kill_server()
    expect(page.locator("#terminal-state")).not_to_have_text("connected", timeout=SLOW)
    platform.serve()
    expect(page.locator("#terminal-state")).to_have_text("connected", timeout=SLOW)
    wait_for_row(page, ".*credential_not_allowed_for_host.*")
    type_line(page, "echo back-$((6*7))")
    wait_for_row(page, "^back-42$")

    with page.expect_download() as download:
        page.click("text=Recording")
    recording = download.value.path().read_text()
    assert json.loads(recording.splitlines()[0])["version"] == 2
    assert "back-42" in recording

    # The other pages, wide and narrow.
    page.goto(platform.url + "/sessions/")
    expect(page.locator("#session-rows .status-ready").first).to_be_visible()
    seen("sessions")
    page.goto(platform.url + "/pool/")
    expect(page.locator('tr[data-harness="shell"]')).to_be_visible()
    seen("pool")
    page.goto(platform.url + "/agents/")
    page.click('tr[data-agent="ui-agent"] >> text=Edit')
    expect(page.locator("#id_secrets-0-name")).to_have_value("GITHUB_TOKEN")
    expect(page.locator("#id_secrets-0-value")).to_have_value("")
    seen("agent-edit")
    page.set_viewport_size({"width": 420, "height": 800})
    page.goto(platform.url + "/agents/")
    seen("agents-narrow")
    page.goto(session_url)  # a fresh page: the scrollback comes back on open
    expect(page.locator("#terminal-state")).to_have_text("connected")
    wait_for_row(page, "^back-42$")
    seen("session-narrow")
    page.set_viewport_size({"width": 1280, "height": 800})

    # The shell exits: the page says so (no protocol text in the terminal) and stops
    # reconnecting; Enter starts a new shell in the same sandbox, its files kept.
    type_line(page, "echo kept-$((3*3)) > /work/note; exit 3")
    state = page.locator("#terminal-state")
    expect(state).to_have_text("exited with code 3 — press Enter to start it again")
    expect(page.locator("#terminal-again")).to_be_visible()
    assert not [row for row in terminal_rows(page) if '"type"' in row]
    seen("session-exited")
    page.keyboard.press("Enter")
    expect(state).to_have_text("connected")
    expect(page.locator("#terminal-again")).to_be_hidden()
    type_line(page, "cat /work/note")
    wait_for_row(page, "^kept-9$")

    # Every page's HTML as the browser got it, and the page fragments htmx polls.
    session_id = session_url.rstrip("/").rsplit("/", 1)[1]
    for path in (
        "/sessions/rows/",
        f"/sessions/{session_id}/vault/",
        f"/sessions/{session_id}/progress/",
    ):
        reply = page.request.get(platform.url + path)
        assert reply.status == 200, path
        seen.bodies.append((path, reply.text()))
    for name, body in seen.bodies:
        assert SECRET not in body, name

    # Stop: the sandbox is gone, the page says so, and an open sessions list follows.
    sessions = page.context.new_page()
    sessions.goto(platform.url + "/sessions/?agent=ui-agent")
    row = sessions.locator(f'tr[data-session="{session_id}"]')
    expect(row.locator(".status")).to_have_text("ready")
    page.goto(session_url)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Stop")
    expect(page.locator("main")).to_contain_text("Session dead")
    assert platform.api("GET", f"/sessions/{session_id}").json()["status"] == "dead"
    expect(row.locator(".status")).to_have_text("dead")  # polled, no reload
    assert SECRET not in platform.log.read_text()


def test_the_progress_view_follows_a_bring_up_to_its_end(page, platform, password):
    """A cold bring-up (no warm pool for codex) whose repository cannot be cloned: the phases
    while it comes up, then the page turns into the failure by itself."""
    platform.create_agent(
        "ui-no-repo", harness_id="codex", repo_url="https://127.0.0.1:9/missing.git"
    )
    log_in(page, platform, password, Seen(page))
    page.click('tr[data-agent="ui-no-repo"] >> text=New session')
    expect(page.locator(".phases .phase").first).to_be_visible()
    screenshot(page, "session-progress")
    expect(page.locator("main")).to_contain_text("Session failed")
    expect(page.locator(".failure")).not_to_be_empty()
    expect(page.locator("#terminal")).to_have_count(0)
