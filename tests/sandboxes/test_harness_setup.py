"""Harness set-up at bring-up (with the driver test double): env, files, tools check, clone."""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest

from agents.harnesses import harness_get
from agents.services import agent_create
from pool.models import PoolTarget
from pool.services import pool_top_up
from sandboxes import registry, services
from sandboxes.drivers.local import LocalDriver
from sandboxes.harness_setup import HarnessContext, claude_agent_sdk, harness_setup, opencode
from sandboxes.models import Sandbox, Session
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db

GATEWAY = "https://llm.example.com"
GATEWAY_KEY = "sk-litellm-real-key-0123456789abcdef"
SANDBOX_ENV = {"NO_PROXY": "localhost,127.0.0.1,llm.example.com", "HOME": "/work"}


@pytest.fixture(autouse=True)
def gateway(settings):
    settings.LITELLM_API_BASE = GATEWAY
    settings.LITELLM_API_KEY = GATEWAY_KEY


def bring_up(user, fake_driver, **fields):
    fields = {"name": "h-agent", "harness_id": "claude-code", "model": "claude-x", **fields}
    agent = agent_create(user=user, **fields)
    session = services.session_create(agent=agent, user=user)
    services.session_bring_up(session.id)
    session.refresh_from_db()
    sandbox = next(iter(fake_driver.sandboxes.values()), None)
    return session, sandbox


def written(sandbox) -> dict[str, tuple[str, str]]:
    """path → (mode, content) from the set-up command the runner was asked to run."""
    files = {}
    for command in sandbox.execs:
        argv = command["argv"]
        if argv[:2] == ["sh", "-c"] and argv[3] == "lap-prepare":
            n = int(argv[4])
            rest = argv[5 + n :]
            for i in range(0, len(rest), 3):
                files[rest[i]] = (rest[i + 1], rest[i + 2])
    return files


def test_claude_code_gets_the_gateway_the_stub_key_and_no_first_run_prompts(user, fake_driver):
    session, sandbox = bring_up(user, fake_driver, prompt="Be terse.")
    assert session.status == Session.Status.READY, session.failure_reason
    env = sandbox.started["env"]
    stub = env["LITELLM_API_KEY"]
    assert stub.startswith("lap_stub_LITELLM_API_KEY_")
    assert env["ANTHROPIC_BASE_URL"] == GATEWAY
    assert env["ANTHROPIC_API_KEY"] == stub
    assert "ANTHROPIC_AUTH_TOKEN" not in env  # both set: the CLI warns of an auth conflict
    assert env["ANTHROPIC_MODEL"] == "claude-x"
    assert sandbox.started["argv"] == ["claude"] and sandbox.started["cwd"] == "/work"
    files = written(sandbox)
    state = json.loads(files["/work/.claude.json"][1])
    assert state["hasCompletedOnboarding"] is True
    assert state["projects"]["/work"]["hasTrustDialogAccepted"] is True
    assert state["customApiKeyResponses"]["approved"] == [stub[-20:]]
    settings = json.loads(files["/work/.claude/settings.json"][1])
    assert settings["permissions"]["defaultMode"] == "bypassPermissions"
    assert files["/work/.claude/CLAUDE.md"] == ("644", "Be terse.")
    assert files["/work/.claude.json"][0] == "600"
    assert GATEWAY_KEY not in repr(sandbox.execs) + repr(sandbox.started)
    # The tools check names the CLI the harness needs.
    assert sandbox.execs[0]["argv"][4:6] == ["1", "claude"]


def test_codex_config_names_the_gateway_model_and_trusted_workdir(user, fake_driver):
    session, sandbox = bring_up(user, fake_driver, harness_id="codex", model="gpt-x", prompt="P")
    assert session.status == Session.Status.READY, session.failure_reason
    env = sandbox.started["env"]
    assert env["OPENAI_BASE_URL"] == GATEWAY + "/v1"
    assert env["OPENAI_API_KEY"] == env["LITELLM_API_KEY"]
    files = written(sandbox)
    config = tomllib.loads(files["/work/.codex/config.toml"][1])
    assert config["model"] == "gpt-x"
    assert config["model_provider"] == "lap"
    provider = config["model_providers"]["lap"]
    assert (provider["base_url"], provider["env_key"], provider["wire_api"]) == (
        GATEWAY + "/v1",
        "OPENAI_API_KEY",
        "responses",
    )
    assert config["projects"]["/work"]["trust_level"] == "trusted"
    assert (config["approval_policy"], config["sandbox_mode"]) == ("never", "danger-full-access")
    assert config["features"]["daemon_auto_start"] is False
    assert files["/work/.codex/AGENTS.md"][1] == "P"


def test_the_gateway_and_repo_hosts_never_bypass_the_vault():
    context = HarnessContext(
        harness_get("codex"), "m", "", "/work", {**SANDBOX_ENV, "LITELLM_API_BASE": GATEWAY}
    )
    assert harness_setup(context).env["NO_PROXY"] == "localhost,127.0.0.1"
    loopback = {**SANDBOX_ENV, "LITELLM_API_BASE": "https://127.0.0.1:4000"}
    context = HarnessContext(harness_get("shell"), "m", "", "/work", loopback)
    assert harness_setup(context).env["NO_PROXY"] == "localhost,llm.example.com"
    repo = {**SANDBOX_ENV, "REPO_URL": "https://localhost:8443/x.git"}
    context = HarnessContext(harness_get("shell"), "m", "", "/work", repo)
    assert harness_setup(context).env["NO_PROXY"] == "127.0.0.1,llm.example.com"


def test_an_agents_own_anthropic_key_is_kept(user, fake_driver):
    _, sandbox = bring_up(
        user,
        fake_driver,
        env_vars={"ANTHROPIC_API_KEY": "sk-ant-own"},
        env_var_hosts={"ANTHROPIC_API_KEY": ["api.anthropic.com"]},
    )
    env = sandbox.started["env"]
    assert env["ANTHROPIC_API_KEY"].startswith("lap_stub_ANTHROPIC_API_KEY_")
    assert "ANTHROPIC_BASE_URL" not in env


def test_a_missing_cli_fails_the_session_naming_make_harnesses(user, fake_driver):
    fake_driver.exec_handler = lambda argv, env: (127, "claude", "") if "claude" in argv else None
    session, _ = bring_up(user, fake_driver)
    assert session.status == Session.Status.FAILED
    assert "claude-code harness is not installed" in session.failure_reason
    assert "make harnesses" in session.failure_reason
    assert not fake_driver.sandboxes  # destroyed


def test_repo_is_cloned_through_the_sandbox_with_the_stub_token_helper(user, fake_driver):
    phases = []

    def record(argv, env):
        phases.append(Session.objects.get().phase)

    fake_driver.exec_handler = record
    session, sandbox = bring_up(
        user,
        fake_driver,
        repo_url="https://github.com/example/repo",
        branch="dev",
        env_vars={"GITHUB_TOKEN": SECRET},
        env_var_hosts={"GITHUB_TOKEN": ["github.com"]},
    )
    assert session.status == Session.Status.READY, session.failure_reason
    prepare, clone = sandbox.execs
    assert prepare["argv"][3] == "lap-prepare"
    assert clone["argv"] == [
        *("git", "clone", "--depth", "1", "--branch", "dev", "--"),
        *("https://github.com/example/repo", "/work/repo"),
    ]
    assert clone["env"]["GITHUB_TOKEN"].startswith("lap_stub_GITHUB_TOKEN_")
    assert clone["env"]["GIT_TERMINAL_PROMPT"] == "0"
    assert phases == [Session.Phase.CLONING_REPO, Session.Phase.CLONING_REPO]
    helper = written(sandbox)["/work/.gitconfig"][1]
    assert "[credential]" in helper and "GITHUB_TOKEN" in helper and SECRET not in helper
    assert sandbox.started["cwd"] == "/work/repo"
    state = json.loads(written(sandbox)["/work/.claude.json"][1])
    assert "/work/repo" in state["projects"]


def test_a_failed_clone_fails_the_session_with_gits_reason(user, fake_driver):
    fake_driver.exec_handler = lambda argv, env: (
        (128, "", "fatal: Authentication failed for 'https://github.com/x/y/'\n")
        if argv[0] == "git"
        else None
    )
    session, _ = bring_up(user, fake_driver, repo_url="https://github.com/x/y", branch="main")
    assert session.status == Session.Status.FAILED
    assert session.failure_reason.startswith("cloning https://github.com/x/y (branch main) failed")
    assert "Authentication failed" in session.failure_reason


def test_a_warm_claim_prepares_the_harness_too(user, fake_driver):
    PoolTarget.objects.create(harness_id="claude-code", target=1)
    pool_top_up()
    for pk in Sandbox.objects.filter(pool_state="provisioning").values_list("pk", flat=True):
        services.pool_sandbox_provision(pk)
    agent = agent_create(user=user, name="warm", harness_id="claude-code", model="m")
    session = services.session_create(agent=agent, user=user)
    services.session_start(session.id)
    session.refresh_from_db()
    assert session.status == Session.Status.READY, session.failure_reason
    (sandbox,) = fake_driver.sandboxes.values()
    assert Sandbox.objects.get(session=session).pool_state == "claimed"
    assert "/work/.claude.json" in written(sandbox)
    assert sandbox.started["env"]["ANTHROPIC_BASE_URL"] == GATEWAY


@pytest.mark.bwrap
def test_a_real_sandbox_without_the_tools_fails_the_session_naming_make_harnesses(user):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    base = Path(tempfile.mkdtemp(prefix="lap-", dir="/tmp"))
    base.chmod(0o711)
    (base / "tools").mkdir()  # a tools directory without the CLIs
    try:
        with registry.use_driver(LocalDriver(base / "home", tools=base / "tools")):
            agent = agent_create(user=user, name="no-tools", harness_id="codex", model="m")
            session = services.session_create(agent=agent, user=user)
            services.session_bring_up(session.id)
            session.refresh_from_db()
            assert session.status == Session.Status.FAILED
            assert session.failure_reason.startswith(
                "the codex harness is not installed in this sandbox ('codex' is not on its PATH)"
            )
            assert "make harnesses" in session.failure_reason
            assert LocalDriver(base / "home").list() == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_api_harness_hooks_point_their_clis_at_the_gateway():
    env = {**SANDBOX_ENV, "LITELLM_API_BASE": GATEWAY, "LITELLM_API_KEY": "lap_stub_x"}
    sdk = harness_setup(HarnessContext(harness_get("shell"), "claude-x", "P", "/work", env))
    assert "ANTHROPIC_BASE_URL" not in sdk.env  # the shell has no hook
    sdk = claude_agent_sdk(HarnessContext(harness_get("claude-agent-sdk"), "m", "P", "/work", env))
    assert (sdk.env["ANTHROPIC_BASE_URL"], sdk.env["ANTHROPIC_API_KEY"]) == (GATEWAY, "lap_stub_x")
    assert "/work/.claude/CLAUDE.md" not in {f.path for f in sdk.files}
    setup = opencode(HarnessContext(harness_get("opencode"), "claude-x", "P", "/work", env))
    files = {f.path: f.content for f in setup.files}
    config = json.loads(files["/work/.config/opencode/opencode.json"])
    provider = config["provider"]["litellm"]
    assert provider["options"] == {"baseURL": GATEWAY + "/v1", "apiKey": "{env:LITELLM_API_KEY}"}
    assert config["model"] == "litellm/claude-x" and "claude-x" in provider["models"]
    assert files["/work/.config/opencode/AGENTS.md"] == "P"
    assert "lap_stub_x" not in json.dumps(config)  # read from the env at run time
    assert config["disabled_providers"] == ["opencode"]


def test_opencode_without_a_gateway_never_falls_back_to_its_hosted_models():
    def config_for(model: str) -> dict:
        context = HarnessContext(harness_get("opencode"), model, "", "/work", SANDBOX_ENV)
        (config_file,) = opencode(context).files
        return json.loads(config_file.content)

    own = config_for("anthropic/claude-sonnet-4-5")  # the agent's own provider and key
    assert own["model"] == "anthropic/claude-sonnet-4-5" and "provider" not in own
    bare = config_for("claude-sonnet-4-5")
    assert "model" not in bare and "provider" not in bare
    assert own["disabled_providers"] == bare["disabled_providers"] == ["opencode"]
