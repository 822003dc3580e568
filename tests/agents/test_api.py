from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from agents.models import Agent
from sandboxes.models import Session
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/managed_agents/agents"


def create(client, **overrides):
    body = {"name": "a1", "harness_id": "shell", **overrides}
    return client.post(AGENTS, body, format="json")


def test_create_returns_agent_without_secret_values(api_client):
    response = create(
        api_client,
        model="anthropic/claude-sonnet-4-6",
        repo_url="https://github.com/example/repo",
        env_vars={"GITHUB_TOKEN": SECRET, "OTHER": "x" * 40},
        env_var_hosts={"GITHUB_TOKEN": ["api.github.com"]},
        allow_out=["*.github.com"],
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "a1"
    assert body["supports_tui"] is True
    assert body["branch"] == "main"
    assert set(body["env_vars"]) == {"GITHUB_TOKEN", "OTHER"}
    assert SECRET not in response.content.decode()
    assert all(SECRET[-4:] not in mask for mask in body["env_vars"].values())
    stored = Agent.objects.get(pk=body["id"])
    assert stored.env_vars["GITHUB_TOKEN"] != SECRET  # encrypted at rest


def test_secret_never_appears_in_any_response(api_client, agent, user):
    bodies = [
        api_client.get(AGENTS).content,
        api_client.get(f"{AGENTS}/{agent.id}").content,
        api_client.get(f"{AGENTS}/{agent.name}").content,
        api_client.patch(f"{AGENTS}/{agent.id}", {"prompt": "p"}, format="json").content,
        api_client.post(f"{AGENTS}/{agent.id}/session", {}, format="json").content,
        api_client.get("/api/v1/managed_agents/sessions").content,
    ]
    for body in bodies:
        assert SECRET not in body.decode()


def test_unknown_harness_is_a_field_error(api_client):
    response = create(api_client, harness_id="nope")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert "unknown harness" in body["fields"]["harness_id"][0]
    assert "shell" in body["fields"]["harness_id"][0]


@pytest.mark.parametrize("name", ["LITELLM_API_KEY", "GIT_TOKEN", "PORT", "REPO_URL"])
def test_reserved_env_key_is_rejected(api_client, name):
    response = create(api_client, env_vars={name: "v"})
    assert response.status_code == 400
    assert "reserved" in response.json()["fields"]["env_vars"][0]
    assert not Agent.objects.exists()


@pytest.mark.parametrize(
    "name",
    [
        "LAP_SESSION_ID",
        "LAP_ANY",
        "HTTPS_PROXY",
        "https_proxy",
        "NODE_EXTRA_CA_CERTS",
        "PATH",
        "HOME",
    ],
)
def test_env_names_the_platform_sets_are_refused(api_client, agent, name):
    created = create(api_client, name="a2", env_vars={name: "v"})
    body = {"env_vars": {name: "v"}, "env_var_hosts": {}}
    updated = api_client.patch(f"{AGENTS}/{agent.id}", body, format="json")
    for response in (created, updated):
        assert response.status_code == 400
        assert response.json()["error"] == f"env_vars: reserved names (set by the platform): {name}"


def test_reserved_env_names_are_case_sensitive_as_env_is(api_client):
    response = create(api_client, env_vars={"Path": "v", "Home": "v", "lap_token": "v"})
    assert response.status_code == 201, response.json()


def test_fifty_one_keys_are_rejected_fifty_accepted(api_client):
    keys = {f"K{i}": "v" for i in range(51)}
    response = create(api_client, env_vars=keys)
    assert response.status_code == 400
    assert "at most 50 keys" in response.json()["fields"]["env_vars"][0]
    keys.pop("K50")
    assert create(api_client, env_vars=keys).status_code == 201


def test_env_vars_over_16_kib_are_rejected(api_client):
    response = create(api_client, env_vars={"BIG": "x" * (16 * 1024)})
    assert response.status_code == 400
    assert "bytes" in response.json()["fields"]["env_vars"][0]


def test_prompt_is_limited_in_utf8_bytes(api_client, agent):
    # It reaches the harness as AGENT_PROMPT, and one env string is at most 128 KiB.
    too_long = "é" * 50_001  # 50 001 characters, 100 002 bytes
    created = create(api_client, name="a2", prompt=too_long)
    updated = api_client.patch(f"{AGENTS}/{agent.id}", {"prompt": too_long}, format="json")
    for response in (created, updated):
        assert response.status_code == 400
        assert response.json()["error"] == "prompt: at most 100000 bytes of UTF-8 (100002 given)"
    assert create(api_client, name="a3", prompt="é" * 50_000).status_code == 201


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", ""])
def test_bad_env_names_are_rejected(api_client, name):
    response = create(api_client, env_vars={name: "v"})
    assert response.status_code == 400
    assert "env_vars" in response.json()["fields"]


@pytest.mark.parametrize(
    "repo_url", ["http://github.com/x/y", "git@github.com:x/y.git", "https://u:p@github.com/x/y"]
)
def test_repo_url_must_be_plain_https(api_client, repo_url):
    response = create(api_client, repo_url=repo_url)
    assert response.status_code == 400
    assert "repo_url" in response.json()["fields"]


@pytest.mark.parametrize("repo_url", ["https://[::1", "https://[zz]/x", "https://a]/x"])
def test_repo_url_with_a_malformed_ipv6_host_is_a_field_error(api_client, agent, repo_url):
    created = create(api_client, name="a2", repo_url=repo_url)
    updated = api_client.patch(f"{AGENTS}/{agent.id}", {"repo_url": repo_url}, format="json")
    for response in (created, updated):
        assert response.status_code == 400
        assert response.json()["error"] == "repo_url: must be an https:// URL"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ({"allow_out": [1, 2]}, "allow_out: 0: must be a string"),
        ({"deny_out": ["a.com", True]}, "deny_out: 1: must be a string"),
        (
            {"env_vars": {"T": "v"}, "env_var_hosts": {"T": [1.5]}},
            "env_var_hosts: T: 0: must be a string",
        ),
        ({"name": 7}, "name: must be a string"),
        ({"prompt": ["a"]}, "prompt: must be a string"),
        ({"env_vars": {"T": 12345}}, "env_vars: T: must be a string"),
    ],
)
def test_strings_must_be_json_strings(api_client, rules, error):
    response = create(api_client, **rules)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert not Agent.objects.exists()


def test_env_var_hosts_key_must_be_an_env_var(api_client):
    response = create(api_client, env_var_hosts={"MISSING": ["api.github.com"]})
    assert response.status_code == 400
    assert "not a key of env_vars" in response.json()["fields"]["env_var_hosts"][0]


def test_env_var_hosts_must_be_covered_by_allow_out(api_client):
    response = create(
        api_client,
        env_vars={"TOKEN": "v"},
        env_var_hosts={"TOKEN": ["evil.example.com"]},
        allow_out=["*.github.com"],
    )
    assert response.status_code == 400
    assert "not covered by allow_out" in response.json()["fields"]["env_var_hosts"][0]


def test_env_var_hosts_free_when_allow_out_empty(api_client):
    response = create(api_client, env_vars={"TOKEN": "v"}, env_var_hosts={"TOKEN": ["a.b.c"]})
    assert response.status_code == 201


def test_bad_json_is_a_400_json_error(api_client):
    response = api_client.post(AGENTS, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "parse_error"


def test_non_object_body_is_a_400(api_client):
    response = api_client.post(AGENTS, data=json.dumps([1]), content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_harness_defaults_to_opencode_as_in_lap(api_client):
    # LAP clients create agents without a harness_id: the reference defaults to opencode.
    response = api_client.post(AGENTS, {"name": "a1", "model": "m"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["harness_id"] == "opencode"
    assert Agent.objects.get(name="a1").harness_id == "opencode"


def test_without_a_name_one_is_made_from_the_model(api_client):
    """The reference API requires only ``model``; a client that sends no name still gets an
    agent, with a name it can use in paths and in ``lap``."""
    first = api_client.post(AGENTS, {"model": "anthropic/Claude Sonnet 4.6"}, format="json")
    second = api_client.post(AGENTS, {"model": "anthropic/Claude Sonnet 4.6"}, format="json")
    assert first.status_code == second.status_code == 201, first.json()
    names = [first.json()["name"], second.json()["name"]]
    assert all(re.fullmatch(r"claude-sonnet-4.6-[0-9a-f]{6}", name) for name in names), names
    assert names[0] != names[1]
    assert api_client.get(f"{AGENTS}/{names[0]}").json()["id"] == first.json()["id"]
    without_model = api_client.post(AGENTS, {"harness_id": "shell"}, format="json")
    assert re.fullmatch(r"agent-[0-9a-f]{6}", without_model.json()["name"])


def test_a_blank_name_is_a_field_error(api_client):
    response = create(api_client, name="")
    assert response.status_code == 400
    assert "name" in response.json()["fields"]


def test_duplicate_name_is_a_conflict(api_client, agent):
    response = create(api_client, name=agent.name)
    assert response.status_code == 409
    assert response.json()["code"] == "name_taken"


def test_names_are_stored_nfc_so_look_alikes_collide(api_client, agent):
    created = create(api_client, name="cafe\u0301")  # decomposed: e + combining acute
    assert created.status_code == 201
    assert created.json()["name"] == "caf\u00e9"
    assert create(api_client, name="caf\u00e9").status_code == 409
    renamed = api_client.patch(f"{AGENTS}/{agent.id}", {"name": "cafe\u0301"}, format="json")
    assert renamed.status_code == 409
    # Either spelling finds it, as either spelling named it.
    for spelling in ("caf\u00e9", "cafe\u0301"):
        found = api_client.get(f"{AGENTS}/{quote(spelling)}")
        assert found.status_code == 200, found.content
        assert found.json()["id"] == created.json()["id"]


def test_name_may_not_be_a_uuid(api_client, agent):
    response = create(api_client, name=str(agent.id))
    assert response.status_code == 400
    assert "name" in response.json()["fields"]


@pytest.mark.parametrize("name", ["a/b", ".", ".."])
def test_name_must_be_usable_as_a_url_path_segment(api_client, name):
    # /agents/{name}: clients resolve "." and ".." away (RFC 3986 dot segments).
    response = create(api_client, name=name)
    assert response.status_code == 400
    assert "name" in response.json()["fields"]
    assert not Agent.objects.exists()


def test_get_by_id_and_by_name(api_client, agent):
    by_id = api_client.get(f"{AGENTS}/{agent.id}")
    by_name = api_client.get(f"{AGENTS}/{agent.name}")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json() == by_name.json()


def test_unknown_agent_is_404_json(api_client):
    response = api_client.get(f"{AGENTS}/nobody")
    assert response.status_code == 404
    assert response.json() == {"error": "agent 'nobody' not found", "code": "not_found"}


def test_list_paginates_newest_first(api_client):
    for index in range(5):
        assert create(api_client, name=f"agent-{index}").status_code == 201
    response = api_client.get(AGENTS, {"limit": 2, "offset": 1})
    body = response.json()
    assert response.status_code == 200
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 1)
    assert [agent["name"] for agent in body["data"]] == ["agent-3", "agent-2"]


def test_list_items_count_sessions_and_sort_as_the_reference_does(api_client):
    for name in ("b-idle", "a-busy", "c-done"):
        assert create(api_client, name=name).status_code == 201
    busy, done = Agent.objects.get(name="a-busy"), Agent.objects.get(name="c-done")
    for status in (Session.Status.READY, Session.Status.DEAD):
        Session.objects.create(agent=busy, harness_id="shell", status=status)
    for _ in range(3):
        Session.objects.create(agent=done, harness_id="shell", status=Session.Status.FAILED)

    def listed(**query):
        return [
            (a["name"], a["session_count"], a["has_active_session"])
            for a in api_client.get(AGENTS, query).json()["data"]
        ]

    assert listed() == [("c-done", 3, False), ("a-busy", 2, True), ("b-idle", 0, False)]
    assert [name for name, *_ in listed(sort="name", order="asc")] == ["a-busy", "b-idle", "c-done"]
    assert [name for name, *_ in listed(sort="sessions")] == ["c-done", "a-busy", "b-idle"]
    assert listed(sort="sessions", order="asc", limit=1) == [("b-idle", 0, False)]
    refused = api_client.get(AGENTS, {"sort": "secret"})
    assert refused.status_code == 400
    assert "sort" in refused.json()["fields"]


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "x"}, {"order": "up"}]
)
def test_list_rejects_bad_paging(api_client, query):
    response = api_client.get(AGENTS, query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_list_searches_name_harness_and_id(api_client):
    shell = create(api_client, name="builder").json()
    create(api_client, name="coder", harness_id="codex")
    assert [a["name"] for a in api_client.get(AGENTS, {"search": "BUILD"}).json()["data"]] == [
        "builder"
    ]
    assert [a["name"] for a in api_client.get(AGENTS, {"search": "codex"}).json()["data"]] == [
        "coder"
    ]
    by_id = api_client.get(AGENTS, {"search": shell["id"]}).json()
    assert [a["name"] for a in by_id["data"]] == ["builder"]
    assert by_id["total"] == 1


def test_list_search_ignores_case_beyond_ascii(api_client):
    create(api_client, name="Émile-Ξ")
    create(api_client, name="other")
    for search in ("émile", "ÉMILE", "ξ"):
        found = api_client.get(AGENTS, {"search": search}).json()
        assert [a["name"] for a in found["data"]] == ["Émile-Ξ"], search


def test_patch_changes_fields_and_keeps_masked_secrets(api_client, agent):
    current = api_client.get(f"{AGENTS}/{agent.id}").json()
    env_vars = {**current["env_vars"], "NEW": "new-value"}
    response = api_client.patch(
        f"{AGENTS}/{agent.name}", {"prompt": "be brief", "env_vars": env_vars}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["prompt"] == "be brief"
    assert response.json()["harness_id"] == "shell"  # not reset to the create default
    assert set(response.json()["env_vars"]) == {"GITHUB_TOKEN", "NEW"}
    agent.refresh_from_db()
    from vault.crypto import decrypt_map

    assert decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": SECRET, "NEW": "new-value"}


def test_a_mask_with_no_stored_secret_behind_it_is_refused(api_client, agent):
    # Copying an agent, or renaming a key, sends back masks that stand for nothing: they
    # must not become the secret values.
    read = api_client.get(f"{AGENTS}/{agent.id}").json()
    copy = create(api_client, name="copy", env_vars=read["env_vars"])
    assert copy.status_code == 400
    assert "GITHUB_TOKEN" in copy.json()["fields"]["env_vars"][0]
    assert not Agent.objects.filter(name="copy").exists()
    renamed = {"GH_TOKEN": read["env_vars"]["GITHUB_TOKEN"]}
    response = api_client.patch(
        f"{AGENTS}/{agent.id}", {"env_vars": renamed, "env_var_hosts": {}}, format="json"
    )
    assert response.status_code == 400
    assert "GH_TOKEN" in response.json()["fields"]["env_vars"][0]
    agent.refresh_from_db()
    from vault.crypto import decrypt_map

    assert decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": SECRET}


def test_patch_of_env_var_hosts_widens_allow_out_unless_allow_out_is_given(api_client, agent):
    # As the reference platform's PATCH: binding a secret to a host lets the agent reach it.
    bind = {"GITHUB_TOKEN": ["api.github.com", "uploads.example.com", "gist.github.com"]}
    response = api_client.patch(f"{AGENTS}/{agent.id}", {"env_var_hosts": bind}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["allow_out"] == [*agent.allow_out, "uploads.example.com"]
    # Given in the same PATCH, allow_out says what egress is wanted: a host outside it is refused.
    both = {"env_var_hosts": {"GITHUB_TOKEN": ["evil.example"]}, "allow_out": ["*.github.com"]}
    response = api_client.patch(f"{AGENTS}/{agent.id}", both, format="json")
    assert response.status_code == 400
    assert "not covered by allow_out" in response.json()["fields"]["env_var_hosts"][0]
    response = api_client.patch(
        f"{AGENTS}/{agent.id}", {"env_var_hosts": {"GITHUB_TOKEN": ["bad host"]}}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"env_var_hosts"}
    agent.refresh_from_db()
    assert agent.allow_out == ["*.github.com", "api.github.com", "uploads.example.com"]


def test_patch_validates_merged_state(api_client, agent):
    # The agent binds GITHUB_TOKEN to api.github.com; dropping the key breaks the binding.
    response = api_client.patch(f"{AGENTS}/{agent.id}", {"env_vars": {}}, format="json")
    assert response.status_code == 400
    assert "env_var_hosts" in response.json()["fields"]
    response = api_client.patch(f"{AGENTS}/{agent.id}", {"harness_id": "bogus"}, format="json")
    assert response.status_code == 400
    agent.refresh_from_db()
    assert agent.harness_id == "shell"


def test_delete_stops_live_sessions(api_client, agent, ready_session, fake_driver):
    sandbox_id = str(ready_session.sandboxes.get().id)
    response = api_client.delete(f"{AGENTS}/{agent.id}")
    assert response.status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not Session.objects.exists()
    assert fake_driver.destroyed == [sandbox_id]
    assert api_client.delete(f"{AGENTS}/{agent.id}").status_code == 404
