from __future__ import annotations

import pytest

from agents import services
from agents.harnesses import HARNESSES
from agents.validation import agent_errors, host_is_covered
from lapsite.errors import Conflict
from vault.crypto import decrypt_map

pytestmark = pytest.mark.django_db

VALID = {
    "name": "n",
    "harness_id": "shell",
    "prompt": "",
    "repo_url": "",
    "branch": "main",
    "env_vars": {},
    "env_var_hosts": {},
    "allow_out": [],
    "deny_out": [],
}


def test_harness_registry():
    assert {h.id: h.supports_tui for h in HARNESSES.values()} == {
        "shell": True,
        "claude-code": True,
        "codex": True,
        "opencode": False,
        "claude-agent-sdk": False,
    }
    assert HARNESSES["shell"].needs_llm is False
    assert all(h.argv for h in HARNESSES.values())


@pytest.mark.parametrize(
    ("host", "rules", "covered"),
    [
        ("api.github.com", ["api.github.com"], True),
        ("api.github.com", ["*.github.com"], True),
        ("github.com", ["*.github.com"], False),
        ("*.a.github.com", ["*.github.com"], True),
        ("*.github.com", ["api.github.com"], False),
        ("10.0.0.5", ["10.0.0.0/8"], True),
        ("11.0.0.5", ["10.0.0.0/8"], False),
        ("API.GitHub.com.", ["api.github.com"], True),
    ],
)
def test_host_coverage(host, rules, covered):
    assert host_is_covered(host, rules) is covered


def test_valid_input_has_no_errors():
    assert agent_errors(**VALID) == {}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"allow_out": ["not a host!"]}, "allow_out"),
        ({"deny_out": ["http://x"]}, "deny_out"),
        ({"allow_out": ["999.999.999.999"]}, "allow_out"),
        ({"deny_out": ["127.1"]}, "deny_out"),
        ({"env_vars": {"K": "v"}, "env_var_hosts": {"K": ["1.2.3.256"]}}, "env_var_hosts"),
        ({"branch": "-rf"}, "branch"),
        ({"branch": "a b"}, "branch"),
        ({"env_var_hosts": {"K": ["a.com"]}}, "env_var_hosts"),
    ],
)
def test_field_errors(override, field):
    assert field in agent_errors(**{**VALID, **override})


def test_ip_and_cidr_rules_are_valid():
    rules = ["1.2.3.4", "10.0.0.0/8", "::1", "2001:db8::/32", "1.example", "*.0.example"]
    env = {"env_vars": {"K": "v"}, "env_var_hosts": {"K": ["10.1.2.3"]}}
    assert agent_errors(**{**VALID, **env, "allow_out": rules, "deny_out": rules}) == {}


def test_create_encrypts_and_update_replaces_env_vars(user):
    agent = services.agent_create(user=user, name="a", harness_id="shell", env_vars={"A": "1"})
    assert decrypt_map(agent.env_vars) == {"A": "1"}
    services.agent_update(agent, env_vars={"A": services.SECRET_MASK, "B": "2"})
    assert decrypt_map(agent.env_vars) == {"A": "1", "B": "2"}
    services.agent_update(agent, env_vars={"B": "3"})
    agent.refresh_from_db()
    assert decrypt_map(agent.env_vars) == {"B": "3"}


def test_services_refuse_invalid_input_without_the_api(user):
    with pytest.raises(services.AgentInvalid, match="harness_id"):
        services.agent_create(user=user, name="a", harness_id="nope")
    agent = services.agent_create(user=user, name="a", harness_id="shell")
    with pytest.raises(services.AgentInvalid, match="cannot update"):
        services.agent_update(agent, created_at=None)
    with pytest.raises(Conflict):
        services.agent_create(user=user, name="a", harness_id="shell")


def test_rename_to_taken_name_is_a_conflict(user, agent):
    other = services.agent_create(user=user, name="b", harness_id="shell")
    with pytest.raises(Conflict):
        services.agent_update(other, name=agent.name)


def test_masks_carry_nothing_of_the_value(agent):
    assert services.env_vars_masked(agent.env_vars) == {"GITHUB_TOKEN": services.SECRET_MASK}


def test_get_by_id_or_name(agent, user):
    assert services.agent_get(str(agent.id), viewer=user) == agent
    assert services.agent_get(agent.name, viewer=user) == agent
    with pytest.raises(services.NotFound):
        services.agent_get("00000000-0000-4000-8000-000000000000", viewer=user)


def test_rejects_other_users_agent_but_staff_see_every_agent(agent, other_user):
    for key in (str(agent.id), agent.name):
        with pytest.raises(services.NotFound):
            services.agent_get(key, viewer=other_user)
    assert services.agent_list(viewer=other_user) == ([], 0)
    other_user.is_staff = True
    assert services.agent_get(agent.name, viewer=other_user) == agent
    assert services.agent_list(viewer=other_user) == ([agent], 1)
