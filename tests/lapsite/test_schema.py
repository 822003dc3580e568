from __future__ import annotations

import json

import pytest
import yaml
from django.core.management import call_command

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
