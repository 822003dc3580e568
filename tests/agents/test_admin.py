from __future__ import annotations

import pytest
from django.test import Client

from agents.models import Agent
from sandboxes.models import Session
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="root-password")
    client = Client()
    client.force_login(admin)
    return client


def test_agent_pages_show_secret_names_never_values(admin_client, agent):
    for url in ("/admin/agents/agent/", f"/admin/agents/agent/{agent.pk}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
    assert (
        "GITHUB_TOKEN"
        in admin_client.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()
    )


def test_admin_creates_agent_through_services(admin_client):
    response = admin_client.post(
        "/admin/agents/agent/add/",
        {
            "name": "from-admin",
            "model": "",
            "harness_id": "codex",
            "prompt": "",
            "repo_url": "",
            "branch": "main",
            "env_var_hosts": "{}",
            "allow_out": "[]",
            "deny_out": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Agent.objects.get(name="from-admin").harness_id == "codex"


def test_admin_rejects_http_repo(admin_client, agent):
    response = admin_client.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        {
            "name": agent.name,
            "harness_id": "shell",
            "repo_url": "http://example.com/r",
            "branch": "main",
            "env_var_hosts": '{"GITHUB_TOKEN": ["api.github.com"]}',
            "allow_out": "[]",
            "deny_out": "[]",
        },
    )
    assert response.status_code == 200
    assert "https" in response.content.decode()
    agent.refresh_from_db()
    assert agent.repo_url == ""


def test_session_admin_lists_filters_and_stops(admin_client, ready_session, fake_driver):
    listing = admin_client.get("/admin/sandboxes/session/", {"status__exact": "ready"})
    assert listing.status_code == 200
    assert str(ready_session.id) in listing.content.decode()
    detail = admin_client.get(f"/admin/sandboxes/session/{ready_session.pk}/change/")
    assert detail.status_code == 200
    response = admin_client.post(
        "/admin/sandboxes/session/",
        {"action": "stop_sessions", "_selected_action": [str(ready_session.pk)]},
    )
    assert response.status_code == 302
    assert Session.objects.get(pk=ready_session.pk).status == "dead"
    assert not fake_driver.sandboxes


def test_sandbox_admin_is_read_only_and_hides_token(admin_client, ready_session):
    sandbox = ready_session.sandboxes.get()
    page = admin_client.get(f"/admin/sandboxes/sandbox/{sandbox.pk}/change/")
    assert page.status_code == 200
    assert sandbox.runner_token not in page.content.decode()
    assert admin_client.get("/admin/sandboxes/sandbox/add/").status_code == 403


def test_admin_deletes_agent_with_sessions_stopping_them(admin_client, ready_session, fake_driver):
    # The admin cannot delete sessions itself, but deleting their agent goes through
    # agent_delete, which stops them first: that must not be refused for want of it.
    agent = ready_session.agent
    page = admin_client.get(f"/admin/agents/agent/{agent.pk}/delete/")
    assert "Cannot delete" not in page.content.decode()
    response = admin_client.post(f"/admin/agents/agent/{agent.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not fake_driver.sandboxes


def test_admin_bulk_deletes_agents_with_sessions(admin_client, ready_session, fake_driver):
    agent = ready_session.agent
    response = admin_client.post(
        "/admin/agents/agent/",
        {"action": "delete_selected", "_selected_action": [str(agent.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not fake_driver.sandboxes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env_var_hosts", "[1, 2]"),
        ("env_var_hosts", '"api.github.com"'),
        ("env_var_hosts", "123"),
        ("env_var_hosts", '{"GITHUB_TOKEN": null}'),
        ("env_var_hosts", '{"GITHUB_TOKEN": "api.github.com"}'),
        ("env_var_hosts", '{"GITHUB_TOKEN": [{"host": 1}]}'),
        ("allow_out", '{"api.github.com": 1}'),
        ("allow_out", '"api.github.com"'),
        ("allow_out", "[1]"),
        ("allow_out", "[null]"),
        ("allow_out", "123"),
        ("deny_out", '{"evil.example": 1}'),
        ("deny_out", "[{}]"),
        ("deny_out", "[1]"),
    ],
)
def test_admin_refuses_wrongly_shaped_json(admin_client, agent, field, value):
    # JSON of the wrong shape is a field error, never a 500 and never stored (a dict or a
    # string in allow_out would reach the vault as egress rules).
    form = {
        "name": agent.name,
        "harness_id": "shell",
        "repo_url": "",
        "branch": "main",
        "env_var_hosts": '{"GITHUB_TOKEN": ["api.github.com"]}',
        "allow_out": "[]",
        "deny_out": "[]",
    }
    response = admin_client.post(f"/admin/agents/agent/{agent.pk}/change/", {**form, field: value})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.env_var_hosts, stored.allow_out, stored.deny_out) == (
        agent.env_var_hosts,
        agent.allow_out,
        agent.deny_out,
    )
