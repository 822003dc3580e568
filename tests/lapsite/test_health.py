from __future__ import annotations

import pytest
from django.db import DatabaseError

pytestmark = pytest.mark.django_db


def test_healthz_ok(anon_client):
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checks": {"database": "ok", "driver": "ok"}}


def test_healthz_503_names_the_failed_driver(anon_client, fake_driver):
    fake_driver.fail("list", "bwrap missing")
    response = anon_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["database"] == "ok"
    assert "bwrap missing" in body["checks"]["driver"]


def test_healthz_503_names_the_failed_database(anon_client, monkeypatch):
    from lapsite import health

    def broken():
        raise DatabaseError("connection refused")

    monkeypatch.setattr(health.connection, "cursor", broken)
    response = anon_client.get("/healthz")
    assert response.status_code == 503
    assert "connection refused" in response.json()["checks"]["database"]


def test_metrics_needs_staff(token_client):
    assert token_client.get("/metrics").status_code == 403


def test_metrics_as_prometheus_text(api_client, ready_session):
    api_client.get("/api/v1/managed_agents/agents")
    response = api_client.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'lap_sessions{status="ready"} 1.0' in text
    assert 'lap_sessions{status="dead"} 0.0' in text
    assert (
        'lap_http_requests_total{method="GET",status="200",view="agents:agent-collection"}' in text
    )
    assert "lap_http_request_duration_seconds_bucket" in text


def test_metrics_401_is_json_even_for_scrapers(anon_client):
    response = anon_client.get("/metrics", HTTP_ACCEPT="text/plain")
    assert response.status_code == 401
    assert b'"not_authenticated"' in response.content
