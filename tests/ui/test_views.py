"""The web UI's views with the Django test client and the FakeDriver: login, forms and their
validation messages, sessions, the vault panel and the pool page."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, reverse
from rest_framework.test import APIClient

from agents.harnesses import harness_ids
from agents.models import Agent
from agents.services import agent_create
from pool.models import PoolTarget
from sandboxes.models import Session
from sandboxes.recordings import recording_path
from sandboxes.services import session_bring_up, session_create, session_fail, session_stop
from tests.conftest import SECRET
from vault import crypto
from webui import urls as webui_urls
from webui.views.agents import PAGE_SIZE as AGENT_PAGE
from webui.views.sessions import PAGE_SIZE as SESSION_PAGE

pytestmark = pytest.mark.django_db

OPEN_PAGES = {"home", "login", "logout"}
NEW_SECRET = "ghp_typed-into-the-form-and-never-shown-5d1e"


@pytest.fixture
def client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_urls(agent: Agent, session: Session) -> dict[str, str]:
    """Every route of the web UI, with the fixture agent's and session's ids filled in."""
    urls = {}
    for pattern in webui_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        names = set(pattern.pattern.converters)
        kwargs = {"agent_id": str(agent.id)} if "agent_id" in names else {}
        if "session_id" in names:
            kwargs["session_id"] = str(session.id)
        urls[pattern.name] = reverse(f"webui:{pattern.name}", kwargs=kwargs)
    return urls


def agent_post(**overrides) -> dict[str, str]:
    """A complete agent form submission with one new secret row."""
    data = {
        "name": "from-the-form",
        "harness_id": "shell",
        "model": "none",
        "prompt": "",
        "repo_url": "",
        "branch": "",
        "allow_out": "api.github.com\n*.example.com",
        "deny_out": "",
        "secrets-TOTAL_FORMS": "1",
        "secrets-INITIAL_FORMS": "0",
        "secrets-MIN_NUM_FORMS": "0",
        "secrets-MAX_NUM_FORMS": "50",
        "secrets-0-name": "GITHUB_TOKEN",
        "secrets-0-value": NEW_SECRET,
        "secrets-0-hosts": "api.github.com",
    }
    data.update(overrides)
    return data


def errors_of(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", e).strip() for e in re.findall(r"<li>(.*?)</li>", html)]


def test_every_page_sends_anonymous_users_to_the_login_form(agent, session):
    anonymous = Client()
    for name, url in page_urls(agent, session).items():
        if name in OPEN_PAGES:
            continue
        for method in (anonymous.get, anonymous.post):
            response = method(url)
            assert response.status_code == 302, (name, method)
            assert response["Location"] == f"{reverse('webui:login')}?next={url}", name


def test_a_logged_out_poll_sends_the_page_to_the_login_form(agent, session):
    """htmx follows a redirect itself and would swap the login page into the polled part."""
    anonymous = Client(headers={"HX-Request": "true"})
    page = "http://testserver/sessions/?status=ready"
    for name in ("session-rows", "session-progress", "session-vault"):
        url = page_urls(agent, session)[name]
        response = anonymous.get(url, headers={"HX-Current-URL": page})
        assert response.status_code == 204, name
        assert (
            response["HX-Redirect"] == f"{reverse('webui:login')}?next=/sessions/%3Fstatus%3Dready"
        )
        assert not response.content


def test_login_form_logs_in_and_lands_on_the_agents(user):
    browser = Client(enforce_csrf_checks=True)
    form = browser.get(reverse("webui:login") + "?next=/pool/")
    assert form.status_code == 200
    token = form.cookies["csrftoken"].value
    wrong = browser.post(
        reverse("webui:login"),
        {"username": "alice", "password": "nope", "csrfmiddlewaretoken": token, "next": "/pool/"},
    )
    assert wrong.status_code == 200
    assert "Please enter a correct username and password" in wrong.content.decode()
    right = browser.post(
        reverse("webui:login"),
        {"username": "alice", "password": "alice-password", "csrfmiddlewaretoken": token},
    )
    assert right.status_code == 302 and right["Location"] == "/"
    assert browser.get("/", follow=True).redirect_chain[-1][0] == reverse("webui:agent-list")


def test_forms_refuse_posts_without_the_csrf_token(user, agent):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    for url in (
        reverse("webui:agent-create"),
        reverse("webui:session-start", args=[agent.id]),
        reverse("webui:agent-delete", args=[agent.id]),
        reverse("webui:pool"),
    ):
        assert browser.post(url, agent_post()).status_code == 403, url


def test_creating_an_agent_through_the_form_stores_the_secret_encrypted(client, user):
    response = client.post(reverse("webui:agent-create"), agent_post())
    assert response.status_code == 302, errors_of(response.content.decode())
    agent = Agent.objects.get(name="from-the-form")
    assert crypto.decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": NEW_SECRET}
    assert agent.env_var_hosts == {"GITHUB_TOKEN": ["api.github.com"]}
    assert agent.allow_out == ["api.github.com", "*.example.com"]
    assert agent.branch == "main"
    assert agent.created_by == user


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"repo_url": "http://example.com/r.git"}, "repo_url", "must be an https:// URL"),
        (
            {"repo_url": "https://me:ghp_x@github.com/r.git"},
            "repo_url",
            "must not contain credentials; put the token in “Secrets”",
        ),
        ({"branch": "-x"}, "branch", "not a valid branch name"),
        ({"harness_id": "nope"}, "harness_id", "Select a valid choice"),
        ({"allow_out": "not a host!"}, "allow_out", "not a host, *.wildcard, IP or CIDR"),
        (
            {"secrets-0-hosts": "evil.test"},
            "secrets",
            "host evil.test is not covered by “Allowed egress”",
        ),
        ({"secrets-0-name": "LITELLM_API_KEY"}, "secrets", "reserved names"),
        ({"secrets-0-name": "9BAD"}, "secrets", "invalid names"),
        ({"secrets-0-value": ""}, "secrets-0-value", "a new secret needs a value"),
        ({"name": ""}, "name", "This field is required"),
    ],
)
def test_invalid_agent_shows_the_message_on_its_field(client, overrides, field, message):
    response = client.post(reverse("webui:agent-create"), agent_post(**overrides))
    assert response.status_code == 200
    html = response.content.decode()
    assert not Agent.objects.filter(name="from-the-form").exists()
    # The message sits in the block of the field it is about.
    if field == "secrets":
        block = html[html.index('class="secrets') : html.index("secrets-table")]
    else:
        start = html.index(f'name="{field}"')
        block = html[start : html.index("</div>", start)]
    assert message in block, (field, errors_of(html))
    assert NEW_SECRET not in html  # a typed value is never echoed back


def test_form_messages_name_the_forms_fields_not_the_apis(client):
    """The API says ``env_vars``; the form calls that field “Secrets”."""
    response = client.post(
        reverse("webui:agent-create"), agent_post(repo_url="https://me:ghp_x@github.com/r.git")
    )
    assert "env_vars" not in response.content.decode()
    api = APIClient()
    api.force_authenticate(response.wsgi_request.user)
    answer = api.post(
        "/api/v1/managed_agents/agents",
        {"name": "api-agent", "harness_id": "shell", "repo_url": "https://me:x@github.com/r"},
        format="json",
    )
    assert answer.status_code == 400 and "put the token in env_vars" in answer.content.decode()


def test_blank_secret_rows_are_ignored_and_a_row_without_a_name_is_refused(client, agent):
    blank = {"secrets-0-name": "", "secrets-0-value": "", "secrets-0-hosts": ""}
    response = client.post(reverse("webui:agent-create"), agent_post(**blank))
    assert response.status_code == 302
    assert Agent.objects.get(name="from-the-form").env_vars == {}
    # The edit page always adds a blank row below the stored secrets: saving it unchanged.
    url = reverse("webui:agent-edit", args=[agent.id])
    unchanged = agent_post(
        name=agent.name,
        allow_out="*.github.com\napi.github.com",
        **{
            "secrets-TOTAL_FORMS": "2",
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-value": "",
            **{key.replace("-0-", "-1-"): value for key, value in blank.items()},
        },
    )
    assert client.post(url, unchanged).status_code == 302
    agent.refresh_from_db()
    assert crypto.decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": SECRET}
    nameless = agent_post(name="no-name-row", **{"secrets-0-name": ""})
    response = client.post(reverse("webui:agent-create"), nameless)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<div class="field-errors" role="alert">This field is required.</div>' in html
    assert not Agent.objects.filter(name="no-name-row").exists()


def test_a_secret_value_with_a_nul_byte_is_refused_on_its_field(client):
    response = client.post(
        reverse("webui:agent-create"), agent_post(**{"secrets-0-value": "a\x00b"})
    )
    assert response.status_code == 200
    html = response.content.decode()
    start = html.index('name="secrets-0-value"')
    assert "Null characters are not allowed." in html[start : html.index("</td>", start)]
    assert not Agent.objects.filter(name="from-the-form").exists()


def test_taken_name_is_reported_on_the_name_field(client, agent):
    response = client.post(reverse("webui:agent-create"), agent_post(name=agent.name))
    html = response.content.decode()
    start = html.index('name="name"')
    assert "already exists" in html[start : html.index("</div>", start)]
    assert NEW_SECRET not in html
    assert "Secret values are never sent back to the page: type them in again." in html


def test_edit_form_masks_stored_secrets_and_keeps_them_unless_replaced(client, agent):
    url = reverse("webui:agent-edit", args=[agent.id])
    html = client.get(url).content.decode()
    assert SECRET not in html
    assert 'value="GITHUB_TOKEN"' in html and "readonly" in html
    assert "•••••••• (type to replace)" in html
    keep = agent_post(
        name=agent.name,
        allow_out="*.github.com\napi.github.com",
        **{"secrets-INITIAL_FORMS": "1", "secrets-0-value": ""},
    )
    assert client.post(url, keep).status_code == 302
    agent.refresh_from_db()
    assert crypto.decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": SECRET}

    replace = {**keep, "secrets-0-value": NEW_SECRET}
    assert client.post(url, replace).status_code == 302
    agent.refresh_from_db()
    assert crypto.decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": NEW_SECRET}

    remove = {**keep, "secrets-0-DELETE": "on"}
    assert client.post(url, remove).status_code == 302
    agent.refresh_from_db()
    assert agent.env_vars == {} and agent.env_var_hosts == {}


def test_deleting_an_agent_stops_its_sessions_and_lands_on_the_list(
    client, ready_session, fake_driver
):
    agent = ready_session.agent
    url = reverse("webui:agent-delete", args=[agent.id])
    edit = client.get(reverse("webui:agent-edit", args=[agent.id])).content.decode()
    assert f'action="{url}"' in edit and "return confirm(" in edit
    assert client.get(url).status_code == 405  # POST only
    response = client.post(url, follow=True)
    assert response.redirect_chain == [(reverse("webui:agent-list"), 302)]
    assert "Agent test-agent deleted; its live sessions were stopped." in response.content.decode()
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not fake_driver.sandboxes  # the session's sandbox was destroyed
    assert client.post(url).status_code == 404


def test_only_who_may_edit_an_agent_may_delete_it(agent, other_user):
    stranger = Client()
    stranger.force_login(other_user)
    assert stranger.post(reverse("webui:agent-delete", args=[agent.id])).status_code == 404
    assert Agent.objects.filter(pk=agent.pk).exists()
    other_user.is_staff = True  # staff edit every agent, so they may delete it
    other_user.save()
    assert stranger.post(reverse("webui:agent-delete", args=[agent.id])).status_code == 302
    assert not Agent.objects.filter(pk=agent.pk).exists()
    html = stranger.get(reverse("webui:agent-create")).content.decode()
    assert "Delete agent" not in html  # nothing to delete on the new-agent form


def test_a_refused_edit_still_shows_the_stored_secrets_as_stored(client, agent):
    url = reverse("webui:agent-edit", args=[agent.id])
    refused = agent_post(
        name=agent.name,
        repo_url="ftp://example.com/r.git",
        **{"secrets-INITIAL_FORMS": "1", "secrets-0-value": ""},
    )
    response = client.post(url, refused)
    assert response.status_code == 200
    html = response.content.decode()
    assert "must be an https:// URL" in html
    row = html[html.index('name="secrets-0-name"') : html.index('name="secrets-0-hosts"')]
    assert "readonly" in row and "•••••••• (type to replace)" in row
    assert SECRET not in html


def test_unknown_agent_or_session_is_a_404(client):
    assert client.get(reverse("webui:agent-edit", args=["nobody"])).status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(reverse("webui:session-detail", args=[missing])).status_code == 404
    assert client.get(reverse("webui:session-detail", args=["not-a-uuid"])).status_code == 404
    page = client.get(reverse("webui:session-detail", args=[missing])).content.decode()
    assert "<h1>Not found</h1>" in page and 'aria-label="Main"' in page  # the site's page


def test_agent_list_searches_and_shows_session_counts(client, agent, ready_session, user):
    agent_create(user=user, name="other-agent", harness_id="opencode")
    html = client.get(reverse("webui:agent-list")).content.decode()
    assert 'data-agent="test-agent"' in html and 'data-agent="other-agent"' in html
    row = html[html.index('data-agent="test-agent"') :]
    row = row[: row.index("</tr>")]
    assert "status-ready" in row and ">1</a>" in row
    found = client.get(reverse("webui:agent-list"), {"q": "other"}).content.decode()
    assert 'data-agent="other-agent"' in found and 'data-agent="test-agent"' not in found


def test_agent_list_pages_through_every_agent(client, user):
    for i in range(AGENT_PAGE + 3):
        agent_create(user=user, name=f"paged-{i:02d}", harness_id="shell")
    url = reverse("webui:agent-list")
    first = client.get(url, {"q": "paged"}).content.decode()
    assert first.count("data-agent=") == AGENT_PAGE and 'data-agent="paged-00"' not in first
    assert 'href="?q=paged&amp;page=2"' in first and "← Newer" not in first
    second = client.get(url, {"q": "paged", "page": "2"}).content.decode()
    assert second.count("data-agent=") == 3 and 'data-agent="paged-00"' in second
    assert 'href="?q=paged&amp;page=1"' in second and "Older →" not in second
    for odd in ("0", "-1", "x", "²", "9" * 30):  # not a page number: the first page
        html = client.get(url, {"q": "paged", "page": odd}).content.decode()
        assert re.findall(r'data-agent="[^"]+"', html) == re.findall(r'data-agent="[^"]+"', first)


def test_session_list_pages_through_every_session(client, agent, user):
    made = [session_create(agent=agent, user=user) for _ in range(SESSION_PAGE + 1)]
    url = reverse("webui:session-list")
    first = client.get(url).content.decode()
    assert first.count("data-session=") == SESSION_PAGE and str(made[0].id) not in first
    assert 'href="?page=2"' in first
    second = client.get(url, {"page": "2"}).content.decode()
    assert second.count("data-session=") == 1 and str(made[0].id) in second
    assert 'hx-get="/sessions/rows/?page=2"' in second  # the poll keeps to its page
    assert "Older →" not in second


def test_starting_a_session_shows_its_progress_then_the_terminal(
    client, agent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("webui:session-start", args=[agent.id]))
    session = Session.objects.get(agent=agent)
    assert response["Location"] == reverse("webui:session-detail", args=[session.id])
    page = client.get(response["Location"]).content.decode()
    assert "phase-pending" in page and 'id="terminal"' not in page
    progress = client.get(reverse("webui:session-progress", args=[session.id]))
    assert "HX-Refresh" not in progress

    for callback in callbacks:  # the bring-up
        callback()
    progress = client.get(reverse("webui:session-progress", args=[session.id]))
    assert progress["HX-Refresh"] == "true"
    page = client.get(response["Location"]).content.decode()
    assert f'data-tty-path="/api/v1/managed_agents/sessions/{session.id}/tty"' in page
    assert "vendor/xterm/lib/xterm.js" in page
    assert f"/api/v1/managed_agents/sessions/{session.id}/recording" in page


def test_api_harness_session_gets_the_chat(client, user):
    chat_agent = agent_create(user=user, name="chatty", harness_id="opencode")
    session = session_create(agent=chat_agent, user=user)
    session_bring_up(session.id)
    html = client.get(reverse("webui:session-detail", args=[session.id])).content.decode()
    assert 'id="chat"' in html and 'id="terminal"' not in html
    assert f'data-api="/api/v1/managed_agents/sessions/{session.id}"' in html
    assert 'aria-label="Abort the reply"' in html


def test_stop_button_stops_the_session(client, ready_session, fake_driver):
    response = client.post(reverse("webui:session-stop", args=[ready_session.id]))
    assert response.status_code == 302
    ready_session.refresh_from_db()
    assert ready_session.status == "dead"
    assert not fake_driver.sandboxes
    html = client.get(response["Location"]).content.decode()
    assert "Session dead" in html and 'aria-label="Stop this session"' not in html


def test_recording_is_offered_only_when_there_is_one(client, agent, user, settings, tmp_path):
    settings.LAP_HOME = str(tmp_path)
    creating = session_create(agent=agent, user=user)
    page = client.get(reverse("webui:session-detail", args=[creating.id])).content.decode()
    assert "Download the terminal recording" not in page
    session_fail(creating, "the sandbox did not start")
    page = client.get(reverse("webui:session-detail", args=[creating.id])).content.decode()
    assert "Session failed" in page and "Download the terminal recording" not in page
    kept = recording_path(creating.id)
    kept.parent.mkdir()
    kept.write_text('{"version": 2, "width": 80, "height": 24}\n')
    page = client.get(reverse("webui:session-detail", args=[creating.id])).content.decode()
    assert "Download the terminal recording" in page


def test_session_list_filters_and_its_rows_poll(client, ready_session, user):
    url = reverse("webui:session-list")
    assert str(ready_session.id)[:8] in client.get(url).content.decode()
    assert "No sessions." in client.get(url, {"status": "failed"}).content.decode()
    assert "No sessions." in client.get(url, {"agent": "someone-else"}).content.decode()
    rows = client.get(reverse("webui:session-rows"), {"agent": "test-agent"}).content.decode()
    assert "status-ready" in rows and "<html" not in rows


def test_an_invalid_filter_is_ignored_alone(client, ready_session):
    """A bad ``?status=`` does not drop the agent filter beside it."""
    for url in (reverse("webui:session-list"), reverse("webui:session-rows")):
        html = client.get(url, {"agent": "someone-else", "status": "bogus"}).content.decode()
        assert "No sessions." in html, url
        html = client.get(url, {"agent": "test-agent", "status": "bogus"}).content.decode()
        assert str(ready_session.id) in html, url


def test_an_ended_session_shows_no_phase(client, ready_session):
    """Its phase stays ``ready`` in the API, which the list must not read as if it were."""

    def phase_cell() -> str:
        rows = client.get(reverse("webui:session-rows")).content.decode()
        return re.findall(r'<td class="mono dim">(.*?)</td>', rows)[0]

    assert phase_cell() == "ready"
    session_stop(ready_session)
    ready_session.refresh_from_db()
    assert ready_session.phase == "ready"  # unchanged: the API's field
    assert phase_cell() == "—"
    failed = session_create(agent=ready_session.agent, user=ready_session.created_by)
    session_fail(failed, "the sandbox did not start")
    html = client.get(reverse("webui:session-list"), {"status": "failed"}).content.decode()
    assert re.findall(r'<td class="mono dim">(.*?)</td>', html) == ["—"]


def test_vault_panel_lists_stubs_and_hosts_never_values(client, ready_session):
    html = client.get(reverse("webui:session-vault", args=[ready_session.id])).content.decode()
    assert re.search(r"lap_stub_GITHUB_TOKEN_[0-9a-f]{32}", html)
    assert "api.github.com" in html
    assert SECRET not in html


def test_pool_targets_are_for_staff_only(client, user):
    html = client.get(reverse("webui:pool")).content.decode()
    assert 'data-harness="shell"' in html and "Save targets" not in html
    assert "<input" not in html.split("<tbody>")[1]  # targets shown, not editable
    targets = dict.fromkeys(harness_ids(), "0")
    refused = client.post(reverse("webui:pool"), {**targets, "shell": "3"})
    assert refused.status_code == 403
    assert not PoolTarget.objects.filter(harness_id="shell", target=3).exists()


def test_pool_page_shows_counts_and_edits_targets(client, user, settings):
    settings.LAP_POOL_MAX = 5
    user.is_staff = True
    user.save()
    html = client.get(reverse("webui:pool")).content.decode()
    assert "Save targets" in html
    assert 'data-harness="shell"' in html and 'aria-label="Warm target for shell"' in html
    targets = dict.fromkeys(harness_ids(), "0")
    too_many = client.post(reverse("webui:pool"), {**targets, "shell": "6"})
    assert "must be at most LAP_POOL_MAX (5)" in too_many.content.decode()
    assert not PoolTarget.objects.filter(harness_id="shell", target=6).exists()
    saved = client.post(reverse("webui:pool"), {**targets, "shell": "3", "codex": "1"})
    assert saved.status_code == 302
    targets = dict(PoolTarget.objects.values_list("harness_id", "target"))
    assert (targets["shell"], targets["codex"]) == (3, 1)


def test_no_page_contains_a_secret_value(client, agent, ready_session):
    """Every route of the web UI, rendered for a logged-in user, carries no secret value."""
    for name, url in page_urls(agent, ready_session).items():
        response = client.get(url, follow=True)
        assert response.status_code in (200, 405), (name, response.status_code)
        assert SECRET not in response.content.decode(), name
