"""Who sees what: a user reaches the agents it created and their sessions; staff (the master
key's user included) reach everything. Another user's object is a 404, never a 403, so nobody
learns which ids exist. Every route with an agent or session id is found from the URLconf, so
a new endpoint is covered without being listed here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from agents.models import Agent
from sandboxes.models import Session
from terminals.access import CLOSE_NOT_FOUND, Credentials, TerminalDenied
from terminals.services import terminal_target

METHODS = ("get", "post", "put", "patch", "delete")
ORIGIN = "http://testserver"


def _routes(patterns: list, prefix: str = "") -> Iterator[tuple[str, object]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def owned_routes() -> list[tuple[str, str, str]]:
    """``(method, route, "api"|"page")`` for every route taking ``agent_id`` or ``session_id``."""
    found = []
    for route, view in _routes(get_resolver().url_patterns):
        if "<str:agent_id>" not in route and "<str:session_id>" not in route:
            continue
        view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
        if view_class is not None:
            methods = [m for m in METHODS if hasattr(view_class, m)]
            found += [(method, route, "api") for method in methods]
        else:
            found.append(("get", route, "page"))
    return found


def _url(route: str, agent: Agent, session: Session) -> str:
    return "/" + route.replace("<str:agent_id>", str(agent.id)).replace(
        "<str:session_id>", str(session.id)
    )


def _api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_issue(user)}")
    return client


def test_the_walk_finds_the_owned_routes():
    routes = {(method, route) for method, route, _ in owned_routes()}
    assert ("delete", "api/v1/managed_agents/agents/<str:agent_id>") in routes
    assert ("post", "api/v1/managed_agents/sessions/<str:session_id>/exec") in routes
    assert ("get", "api/v1/managed_agents/sessions/<str:session_id>/interceptions") in routes
    assert ("get", "sessions/<str:session_id>/") in routes
    assert len(routes) >= 20


def test_rejects_other_users_agent_and_session_on_every_route(ready_session, other_user):
    agent = ready_session.agent
    api, page = _api_client(other_user), Client()
    page.force_login(other_user)
    for method, route, kind in owned_routes():
        url = _url(route, agent, ready_session)
        if kind == "api":
            response = getattr(api, method)(url, {}, format="json")
            assert response.status_code == 404, (method, url, response.status_code)
            assert agent.name not in response.content.decode()
        else:
            response = page.get(url)
            if response.status_code == 405:  # a form's target: POST only
                response = page.post(url)
            assert response.status_code == 404, url
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.READY
    assert Agent.objects.filter(pk=agent.pk).exists()


def test_lists_hold_only_the_users_own(ready_session, user, other_user):
    stranger = _api_client(other_user)
    assert stranger.get("/api/v1/managed_agents/agents").json()["total"] == 0
    assert stranger.get("/api/v1/managed_agents/sessions").json() == []
    owner = _api_client(user)
    assert owner.get("/api/v1/managed_agents/agents").json()["total"] == 1
    (listed,) = owner.get("/api/v1/managed_agents/sessions").json()
    assert listed["id"] == str(ready_session.id)


def test_owner_and_staff_reach_the_session(ready_session, user, other_user, api_client):
    url = f"/api/v1/managed_agents/sessions/{ready_session.id}"
    assert _api_client(user).get(url).status_code == 200
    assert api_client.get(url).status_code == 200  # the master key
    other_user.is_staff = True
    other_user.save()
    assert _api_client(other_user).get(url).status_code == 200


def test_a_new_agent_belongs_to_its_creator(other_user, user):
    created = _api_client(other_user).post(
        "/api/v1/managed_agents/agents", {"name": "mine", "harness_id": "shell"}, format="json"
    )
    assert created.status_code == 201
    assert _api_client(user).get("/api/v1/managed_agents/agents/mine").status_code == 404
    assert _api_client(other_user).get("/api/v1/managed_agents/agents/mine").status_code == 200


def test_pool_targets_are_set_by_staff_only(user, api_client):
    body = {"targets": {"shell": 1}}
    refused = _api_client(user).put("/api/v1/managed_agents/pool", body, format="json")
    assert refused.status_code == 403
    assert _api_client(user).get("/api/v1/managed_agents/pool").status_code == 200
    assert api_client.put("/api/v1/managed_agents/pool", body, format="json").status_code == 200


@pytest.mark.django_db
def test_a_cookie_terminal_reaches_only_the_users_own_sessions(ready_session, user, other_user):
    cookie = Credentials(token=None, origin=ORIGIN)
    with pytest.raises(TerminalDenied) as denied:
        terminal_target(str(ready_session.id), cookie, other_user)
    assert denied.value.code == CLOSE_NOT_FOUND
    assert terminal_target(str(ready_session.id), cookie, user).runner_token
