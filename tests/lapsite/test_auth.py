from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

API = "/api/v1/managed_agents"
PROTECTED = [
    ("get", f"{API}/agents"),
    ("post", f"{API}/agents"),
    ("get", f"{API}/agents/x"),
    ("patch", f"{API}/agents/x"),
    ("delete", f"{API}/agents/x"),
    ("post", f"{API}/agents/x/session"),
    ("get", f"{API}/sessions"),
    ("get", f"{API}/sessions/x"),
    ("delete", f"{API}/sessions/x"),
    ("get", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_anonymous_gets_401_json(anon_client, method, path):
    response = getattr(anon_client, method)(path)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED[:3])
def test_wrong_key_gets_401(anon_client, method, path):
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer wrong-key")
    assert getattr(anon_client, method)(path).status_code == 401


def test_master_key_and_user_token_both_work(api_client, token_client):
    assert api_client.get(f"{API}/agents").status_code == 200
    assert token_client.get(f"{API}/agents").status_code == 200


def test_created_by_records_the_token_user(token_client, user):
    response = token_client.post(f"{API}/agents", {"name": "x", "harness_id": "shell"})
    assert response.status_code == 201
    from agents.models import Agent

    assert Agent.objects.get(name="x").created_by == user


@pytest.mark.parametrize("path", ["/healthz", "/api/schema/", "/api/docs/"])
def test_public_endpoints(anon_client, path):
    assert anon_client.get(path).status_code == 200
