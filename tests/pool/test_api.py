from __future__ import annotations

import pytest

from pool.models import PoolTarget

pytestmark = pytest.mark.django_db
URL = "/api/v1/managed_agents/pool"


def test_get_answers_per_harness_counts_and_the_cap(api_client, settings):
    settings.LAP_POOL_MAX = 7
    PoolTarget.objects.update_or_create(harness_id="shell", defaults={"target": 2})
    body = api_client.get(URL).json()
    assert body["max"] == 7
    assert body["harnesses"]["shell"] == {"target": 2, "warm": 0, "provisioning": 0, "claimed": 0}
    assert body["harnesses"]["codex"]["target"] == 0


def test_put_sets_targets_and_tops_up(api_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        reply = api_client.put(URL, {"targets": {"codex": 1}}, format="json")
    assert reply.status_code == 200, reply.json()
    assert reply.json()["harnesses"]["codex"]["target"] == 1
    assert PoolTarget.objects.get(harness_id="codex").target == 1


@pytest.mark.parametrize(
    ("targets", "field"),
    [({"nope": 1}, "nope"), ({"shell": -1}, "shell"), ({"shell": 11}, "shell")],
)
def test_put_validates_harness_ids_and_bounds(api_client, settings, targets, field):
    settings.LAP_POOL_MAX = 10
    reply = api_client.put(URL, {"targets": targets}, format="json")
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == "invalid"
    # A list of messages per harness, as DRF's own checks (the minimum) give it.
    (message,) = body["fields"]["targets"][field]
    assert body["error"] == f"targets: {field}: {message}"


def test_put_needs_targets(api_client):
    reply = api_client.put(URL, {}, format="json")
    assert reply.status_code == 400
    assert "targets" in reply.json()["fields"]


def test_needs_credentials(anon_client):
    assert anon_client.get(URL).status_code == 401


def test_put_refuses_a_body_that_is_not_json(api_client):
    # The schema documents the 415 (checked by tests/schema_conformance.py on every reply).
    reply = api_client.put(URL, "targets=1", content_type="application/x-www-form-urlencoded")
    assert reply.status_code == 415
    assert reply.json()["code"] == "unsupported_media_type"


def test_put_refuses_a_body_too_large(api_client, settings):
    # The schema documents the 413 too (the message names the limit).
    reply = api_client.put(
        URL,
        b'{"targets": {"shell": 1}, "x": "' + b"a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + b'"}',
        content_type="application/json",
    )
    assert reply.status_code == 413
    assert reply.json()["code"] == "too_large"
