"""The vault endpoints: names, stubs and hosts; records and events; never a value."""

from __future__ import annotations

import pytest

from sandboxes.models import Sandbox
from tests.conftest import SECRET
from tests.vault.records import record_blocked as blocked
from vault.models import VaultKey

pytestmark = pytest.mark.django_db
API = "/api/v1/managed_agents"


def test_vault_keys_show_names_stubs_and_hosts(api_client, ready_session):
    reply = api_client.get(f"{API}/sessions/{ready_session.id}/vault-keys")
    assert reply.status_code == 200
    stub = VaultKey.objects.get().stub
    assert reply.json() == [
        {
            "name": "GITHUB_TOKEN",
            "stub": stub,
            "source": "agent",
            "allowed_hosts": ["api.github.com"],
        }
    ]
    assert SECRET not in reply.content.decode()


def test_interceptions_are_pulled_fresh_and_paginated(api_client, ready_session, fake_driver):
    sandbox = Sandbox.objects.get(session=ready_session)
    vault = fake_driver.vault(str(sandbox.id))
    stub = VaultKey.objects.get().stub
    for n in range(5):
        blocked(vault, host=f"h{n}.example")
    url = f"{API}/sessions/{ready_session.id}/interceptions"
    first = api_client.get(url, {"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 0)
    assert [r["host"] for r in page["data"]] == ["h0.example", "h1.example"]
    assert page["data"][0]["credentials"] == ["GITHUB_TOKEN"]
    last = api_client.get(url, {"limit": 2, "offset": 4}).json()
    assert [r["host"] for r in last["data"]] == ["h4.example"]
    for body in (first.content.decode(), str(last)):
        assert SECRET not in body and stub not in body
    assert api_client.get(url, {"limit": 0}).status_code == 400


def test_security_events_and_metric(api_client, ready_session, fake_driver):
    sandbox = Sandbox.objects.get(session=ready_session)
    blocked(fake_driver.vault(str(sandbox.id)))
    reply = api_client.get(f"{API}/sessions/{ready_session.id}/security-events")
    assert reply.status_code == 200
    (event,) = reply.json()
    assert (event["kind"], event["host"], event["credentials"]) == (
        "vault_blocked",
        "evil.example",
        ["GITHUB_TOKEN"],
    )
    assert "lap_vault_blocked_total 1.0" in api_client.get("/metrics").content.decode()


def test_unknown_session_and_anonymous(api_client, anon_client, ready_session):
    missing = api_client.get(f"{API}/sessions/00000000-0000-0000-0000-000000000000/vault-keys")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert anon_client.get(f"{API}/sessions/{ready_session.id}/vault-keys").status_code == 401


def test_agent_api_takes_stop_on_vault_block(api_client):
    body = {"name": "tripwired", "harness_id": "shell", "stop_on_vault_block": True}
    created = api_client.post(f"{API}/agents", body, format="json")
    assert created.status_code == 201 and created.json()["stop_on_vault_block"] is True
    patched = api_client.patch(
        f"{API}/agents/tripwired", {"stop_on_vault_block": False}, format="json"
    )
    assert patched.json()["stop_on_vault_block"] is False
