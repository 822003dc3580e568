"""The API's plumbing (``lapsite/api.py``, ``lapsite/negotiation.py``): every answer is JSON,
whatever the client accepts, and failures have the one ``{"error", "code"}`` shape even when
no view answered."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

API = "/api/v1/managed_agents"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
NO_SESSION = f"{API}/sessions/00000000-0000-0000-0000-000000000000"


def assert_json(reply, status: int, code: str | None = None) -> dict:
    assert reply.status_code == status, reply.content
    assert reply["Content-Type"] == "application/json", reply["Content-Type"]
    body = reply.json()
    if code:
        assert body["code"] == code
    return body


@pytest.mark.parametrize("accept", ["text/html", BROWSER, "application/xml", "image/png"])
def test_every_answer_is_json_whatever_the_client_accepts(api_client, anon_client, accept):
    assert "data" in assert_json(api_client.get(f"{API}/agents", HTTP_ACCEPT=accept), 200)
    assert_json(api_client.get(f"{API}/agents/nope", HTTP_ACCEPT=accept), 404, "not_found")
    assert_json(anon_client.get(f"{API}/agents", HTTP_ACCEPT=accept), 401, "not_authenticated")
    invalid = api_client.post(f"{API}/agents", {"name": ""}, format="json", HTTP_ACCEPT=accept)
    assert_json(invalid, 400, "invalid")


def test_the_api_renders_json_only(api_client):
    assert assert_json(api_client.options(f"{API}/agents"), 200)["renders"] == ["application/json"]


@pytest.mark.parametrize("accept", ["text/html", BROWSER])
def test_docs_and_schema_keep_their_own_formats(anon_client, accept):
    docs = anon_client.get("/api/docs/", HTTP_ACCEPT=accept)
    assert docs.status_code == 200
    assert docs["Content-Type"].startswith("text/html")
    schema = anon_client.get("/api/schema/", HTTP_ACCEPT=accept)
    assert schema.status_code == 200
    assert schema["Content-Type"].startswith("application/vnd.oai.openapi")


@pytest.mark.parametrize(
    ("method", "path", "accept"),
    [
        ("post", f"{NO_SESSION}/message_stream", "text/event-stream"),
        ("get", f"{NO_SESSION}/events", "text/event-stream"),
        ("post", f"{NO_SESSION}/exec", "application/x-ndjson"),
        ("get", f"{NO_SESSION}/recording", "application/x-asciicast"),
    ],
)
def test_errors_of_streaming_endpoints_are_json(api_client, method, path, accept):
    reply = getattr(api_client, method)(path, {"text": "hi"}, format="json", HTTP_ACCEPT=accept)
    assert_json(reply, 404, "not_found")


def test_a_metrics_scraper_without_credentials_gets_a_json_401(anon_client):
    assert_json(anon_client.get("/metrics", HTTP_ACCEPT="text/plain"), 401, "not_authenticated")


def test_a_disallowed_host_is_told_how_to_allow_it(api_client):
    reply = api_client.get(f"{API}/agents", HTTP_HOST="Evil.com:8443")
    body = assert_json(reply, 400, "bad_request")
    assert body["error"] == (
        "host 'evil.com' is not allowed (add it to the server's DJANGO_ALLOWED_HOSTS)"
    )


def test_a_disallowed_host_is_quoted_short(api_client):
    host = "x" * 5000 + ".evil.com"
    body = assert_json(api_client.get(f"{API}/agents", HTTP_HOST=host), 400, "bad_request")
    assert len(body["error"]) < 200
    assert body["error"].startswith("host 'xxxx")


def test_a_malformed_host_is_called_invalid(api_client):
    body = assert_json(api_client.get(f"{API}/agents", HTTP_HOST="evil.com:x\n"), 400)
    assert body == {"error": "invalid Host header 'evil.com:x\\n'", "code": "bad_request"}
