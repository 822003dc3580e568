from __future__ import annotations

import json

import pytest
import yaml
from django.core.management import call_command
from django.http import JsonResponse
from django.test import RequestFactory

from agents.api import AgentSerializer
from tests.schema_conformance import SchemaMismatch, check_response

pytestmark = pytest.mark.django_db


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    paths = schema["paths"]
    for path in (
        "/api/v1/managed_agents/agents",
        "/api/v1/managed_agents/agents/{agent_id}",
        "/api/v1/managed_agents/agents/{agent_id}/session",
        "/api/v1/managed_agents/sessions",
        "/api/v1/managed_agents/sessions/{session_id}",
        "/api/v1/managed_agents/sessions/{session_id}/exec",
        "/api/v1/managed_agents/sessions/{session_id}/recording",
        "/api/v1/managed_agents/sessions/{session_id}/message",
        "/api/v1/managed_agents/sessions/{session_id}/message_stream",
        "/api/v1/managed_agents/sessions/{session_id}/messages",
        "/api/v1/managed_agents/sessions/{session_id}/events",
        "/api/v1/managed_agents/sessions/{session_id}/abort",
        "/api/v1/managed_agents/sessions/{session_id}/restart",
        "/healthz",
        "/metrics",
    ):
        assert path in paths
    create = paths["/api/v1/managed_agents/agents"]["post"]["responses"]
    assert create["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "401" in paths["/api/v1/managed_agents/sessions"]["get"]["responses"]
    stream = paths["/api/v1/managed_agents/sessions/{session_id}/message_stream"]["post"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "security" not in paths["/healthz"]["get"] or paths["/healthz"]["get"]["security"] == [
        {}
    ]


def test_schema_endpoint_serves_openapi(anon_client):
    response = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_swagger_ui_renders_with_assets_served_locally(anon_client):
    response = anon_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs"):
        assert cdn not in page


@pytest.mark.parametrize(
    ("query", "media_type"),
    [("", "application/vnd.oai.openapi"), ("?format=json", "application/vnd.oai.openapi+json")],
)
def test_the_schema_is_yaml_by_default_and_json_when_asked(anon_client, query, media_type):
    reply = anon_client.get(f"/api/schema/{query}")
    assert reply.status_code == 200
    assert reply["Content-Type"].split(";")[0] == media_type
    schema = json.loads(reply.content) if query else yaml.safe_load(reply.content)
    assert schema["info"]["title"] == "LAP — agent platform API"
    suffix = "json" if query else "yaml"
    assert reply["Content-Disposition"] == f'inline; filename="lap-openapi.{suffix}"'


def _checked(method: str, path: str, body: object, status: int = 200) -> None:
    request = RequestFactory().generic(method, path)
    check_response(request, JsonResponse(body, status=status, safe=False))


def test_a_response_the_schema_describes_passes(agent):
    _checked("GET", f"/api/v1/managed_agents/agents/{agent.id}", AgentSerializer(agent).data)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"surprise": 1}, "at $: Additional properties are not allowed ('surprise' was"),
        ({"supports_tui": "yes"}, "at $.supports_tui: 'yes' is not of type 'boolean'"),
        ({"id": "not-a-uuid"}, "at $.id: 'not-a-uuid' is not a 'uuid'"),
        ({"created_at": "yesterday"}, "at $.created_at: 'yesterday' is not a 'date-time'"),
        ({"model": None}, "at $.model: None is not of type 'string'"),
    ],
)
def test_a_body_off_the_schema_fails_with_its_json_path(agent, change, complaint):
    body = {**AgentSerializer(agent).data, **change}
    with pytest.raises(SchemaMismatch) as failure:
        _checked("GET", f"/api/v1/managed_agents/agents/{agent.id}", body)
    assert "agents_retrieve (GET /api/v1/managed_agents/agents/{agent_id})" in str(failure.value)
    assert complaint in str(failure.value)


def test_an_undocumented_status_fails():
    with pytest.raises(SchemaMismatch, match="status 418 is not documented"):
        _checked("GET", "/api/v1/managed_agents/agents", {"error": "tea", "code": "x"}, 418)


def test_an_unknown_endpoint_may_only_answer_with_the_error_shape():
    _checked("GET", "/api/v1/managed_agents/nowhere", {"error": "no", "code": "not_found"}, 404)
    with pytest.raises(SchemaMismatch, match="no operation in the schema"):
        _checked("GET", "/api/v1/managed_agents/nowhere", {}, 200)
    with pytest.raises(SchemaMismatch, match="'code' is a required property"):
        _checked("GET", "/api/v1/managed_agents/nowhere", {"error": "no"}, 404)
