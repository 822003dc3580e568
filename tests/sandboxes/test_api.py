from __future__ import annotations

import json
import uuid

import pytest

from sandboxes import services
from sandboxes.limits import EXEC_ARGV_MAX_BYTES, MESSAGE_MAX_BYTES
from sandboxes.models import Session
from sandboxes.runner.protocol import MAX_BODY_BYTES
from sandboxes.runner_client import RunnerError

pytestmark = pytest.mark.django_db

BASE = "/api/v1/managed_agents"
FIELDS = {
    "id",
    "agent_id",
    "status",
    "phase",
    "phase_detail",
    "failure_reason",
    "supports_tui",
    "tty_url",
    "tty_token",
    "idle_timeout_ms",
    "created_at",
    "last_seen_at",
}


def test_create_returns_creating_at_once(api_client, agent, fake_driver):
    response = api_client.post(
        f"{BASE}/agents/{agent.name}/session", {"title": "hi"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == FIELDS
    assert (body["status"], body["agent_id"]) == ("creating", str(agent.id))
    assert body["supports_tui"] is True
    assert (body["tty_url"], body["tty_token"]) == (None, None)  # no terminal until ready
    assert not fake_driver.sandboxes  # bring-up runs after commit, in the background
    assert Session.objects.get(pk=body["id"]).title == "hi"


def test_create_then_bring_up_then_get_ready(api_client, agent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = api_client.post(f"{BASE}/agents/{agent.id}/session", {}, format="json").json()
    body = api_client.get(f"{BASE}/sessions/{created['id']}").json()
    assert (body["status"], body["phase"]) == ("ready", "ready")
    assert body["last_seen_at"] is not None


@pytest.mark.django_db(transaction=True)  # the bring-up runs within the request, as a claim does
def test_a_session_that_fails_at_once_is_answered_with_its_reason(api_client, agent, fake_driver):
    fake_driver.fail("create", "no capacity")
    created = api_client.post(f"{BASE}/agents/{agent.id}/session", {}, format="json").json()
    assert (created["status"], created["failure_reason"]) == ("failed", "no capacity")
    fake_driver.fail("create", "still no capacity")
    restarted = api_client.post(f"{BASE}/sessions/{created['id']}/restart").json()
    assert (restarted["status"], restarted["failure_reason"]) == ("failed", "still no capacity")
    assert api_client.get(f"{BASE}/sessions/{created['id']}").json()["failure_reason"] == (
        "still no capacity"
    )


def test_tty_url_and_token_only_while_ready(api_client, session, agent, user):
    url = f"{BASE}/sessions/{session.id}"
    creating = api_client.get(url).json()
    assert (creating["status"], creating["tty_url"], creating["tty_token"]) == (
        "creating",
        None,
        None,
    )
    services.session_bring_up(session.id)
    ready = api_client.get(url).json()
    assert ready["status"] == "ready"
    assert ready["tty_url"] == f"{url}/tty"
    assert services.tty_token_check(ready["tty_token"], session.id)
    services.session_stop(session)
    dead = api_client.get(url).json()
    assert (dead["status"], dead["tty_url"], dead["tty_token"]) == ("dead", None, None)
    failing = services.session_create(agent=agent, user=user)
    services.session_fail(failing, "no capacity")
    failed = api_client.get(f"{BASE}/sessions/{failing.id}").json()
    assert (failed["status"], failed["tty_url"], failed["tty_token"]) == ("failed", None, None)


def test_api_harness_session_has_no_tty(api_client, user):
    from agents.services import agent_create

    agent = agent_create(user=user, name="oc", harness_id="opencode")
    body = api_client.post(f"{BASE}/agents/oc/session", {}, format="json").json()
    assert (body["supports_tui"], body["tty_url"], body["tty_token"]) == (False, None, None)
    assert body["agent_id"] == str(agent.id)


def test_create_for_unknown_agent_is_404(api_client):
    response = api_client.post(f"{BASE}/agents/ghost/session", {}, format="json")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("env_vars", "message"),
    [
        ({"BRANCH": "x"}, "reserved"),
        ({"HTTPS_PROXY": "x"}, "reserved names (set by the platform): HTTPS_PROXY"),
        ({"LAP_SESSION_ID": "x"}, "reserved names (set by the platform): LAP_SESSION_ID"),
        ({f"K{i}": "v" for i in range(51)}, "at most 50"),
    ],
)
def test_create_rejects_bad_env_vars(api_client, agent, env_vars, message):
    response = api_client.post(
        f"{BASE}/agents/{agent.id}/session", {"env_vars": env_vars}, format="json"
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"title": 5}, "title: must be a string"),
        ({"initial_prompt": 42}, "initial_prompt: must be a string"),
        ({"env_vars": {"TOK": 7}}, "env_vars: TOK: must be a string"),
    ],
)
def test_create_refuses_values_that_are_not_strings(api_client, agent, body, error):
    response = api_client.post(f"{BASE}/agents/{agent.id}/session", body, format="json")
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert not Session.objects.exists()


def test_create_refuses_an_initial_prompt_larger_than_a_message(api_client, agent):
    prompt = "é" * (MESSAGE_MAX_BYTES // 2 + 1)  # two bytes each in UTF-8
    response = api_client.post(
        f"{BASE}/agents/{agent.id}/session", {"initial_prompt": prompt}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (413, "too_large")
    assert f"at most {MESSAGE_MAX_BYTES}" in response.json()["error"]
    assert not Session.objects.exists()


def test_create_refuses_a_mask_as_an_env_var_value(api_client, agent):
    masked = api_client.get(f"{BASE}/agents/{agent.id}").json()["env_vars"]
    response = api_client.post(
        f"{BASE}/agents/{agent.id}/session", {"env_vars": masked}, format="json"
    )
    assert response.status_code == 400
    assert "GITHUB_TOKEN" in response.json()["error"]
    assert not Session.objects.exists()


def test_session_env_var_values_never_returned(api_client, agent):
    response = api_client.post(
        f"{BASE}/agents/{agent.id}/session", {"env_vars": {"TOK": "sess-secret-77"}}, format="json"
    )
    assert response.status_code == 201
    assert "sess-secret-77" not in response.content.decode()


def test_get_unknown_or_malformed_session_is_404(api_client):
    assert api_client.get(f"{BASE}/sessions/{uuid.uuid4()}").status_code == 404
    response = api_client.get(f"{BASE}/sessions/not-a-uuid")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_list_filters_by_agent_and_status(api_client, ready_session, agent, user):
    from agents.services import agent_create

    other = agent_create(user=user, name="other", harness_id="codex")
    creating = services.session_create(agent=other, user=user)
    everything = api_client.get(f"{BASE}/sessions").json()
    assert [s["id"] for s in everything] == [str(creating.id), str(ready_session.id)]
    by_agent = api_client.get(f"{BASE}/sessions", {"agent_id": str(agent.id)}).json()
    assert [s["id"] for s in by_agent] == [str(ready_session.id)]
    by_name = api_client.get(f"{BASE}/sessions", {"agent_id": "other"}).json()
    assert [s["id"] for s in by_name] == [str(creating.id)]
    ready = api_client.get(f"{BASE}/sessions", {"status": "ready"}).json()
    assert [s["id"] for s in ready] == [str(ready_session.id)]
    assert len(api_client.get(f"{BASE}/sessions", {"limit": 1}).json()) == 1


@pytest.mark.parametrize("query", [{"status": "sleeping"}, {"limit": 0}, {"limit": 500}])
def test_list_rejects_bad_filters(api_client, query):
    response = api_client.get(f"{BASE}/sessions", query)
    assert response.status_code == 400
    assert "fields" in response.json()


def test_delete_stops_and_is_idempotent(api_client, ready_session, fake_driver):
    url = f"{BASE}/sessions/{ready_session.id}"
    first = api_client.delete(url)
    assert first.status_code == 200
    assert first.json() == {"id": str(ready_session.id), "status": "deleted"}
    assert not fake_driver.sandboxes
    second = api_client.delete(url)
    assert second.status_code == 200
    assert second.json() == {"id": str(ready_session.id), "status": "dead"}
    assert api_client.get(url).json()["status"] == "dead"


def test_idle_timeout_is_reported_in_ms(api_client, ready_session, settings):
    settings.LAP_IDLE_TIMEOUT = 90
    body = api_client.get(f"{BASE}/sessions/{ready_session.id}").json()
    assert body["idle_timeout_ms"] == 90_000


def test_token_user_can_use_sessions(token_client, ready_session):
    assert token_client.get(f"{BASE}/sessions/{ready_session.id}").status_code == 200


# --- exec ----------------------------------------------------------------------------


def test_exec_refuses_arguments_that_are_not_strings(api_client, ready_session, fake_driver):
    response = api_client.post(
        f"{BASE}/sessions/{ready_session.id}/exec", {"argv": ["sleep", 1]}, format="json"
    )
    assert (response.status_code, response.json()["error"]) == (400, "argv: 1: must be a string")
    (sandbox,) = fake_driver.sandboxes.values()
    assert all(run["argv"][0] != "sleep" for run in sandbox.execs)


def test_exec_refuses_an_argv_larger_than_the_sandbox_takes(api_client, ready_session, fake_driver):
    argv = ["echo"] + ["é" * 4096] * 130  # each within the per-argument limit; 1 MB in all
    response = api_client.post(
        f"{BASE}/sessions/{ready_session.id}/exec", {"argv": argv}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (413, "too_large")
    assert response.json()["error"] == (
        f"argv is too large: 1064964 bytes (UTF-8) in all, at most {EXEC_ARGV_MAX_BYTES}"
    )
    (sandbox,) = fake_driver.sandboxes.values()
    assert all(run["argv"][0] != "echo" for run in sandbox.execs)


def test_the_largest_argv_taken_fits_the_runners_cap_however_json_writes_it():
    argv = ["\x01" * (EXEC_ARGV_MAX_BYTES // 256)] * 256  # six bytes each as JSON
    body = {"argv": argv, "timeout": 3600.0, "cwd": None}  # as RunnerClient.exec sends it
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(encoded) < MAX_BODY_BYTES


def test_exec_refused_by_the_runner_as_too_large_is_413(api_client, ready_session, fake_driver):
    def refuse() -> None:
        raise RunnerError("runner answered 413 to /exec", status=413)

    fake_driver.before("exec", refuse)
    response = api_client.post(
        f"{BASE}/sessions/{ready_session.id}/exec", {"argv": ["true"]}, format="json"
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": "the sandbox refused the command as too large "
        "(its runner takes at most 1048576 bytes a request)",
        "code": "too_large",
    }
