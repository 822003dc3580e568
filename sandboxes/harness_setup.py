"""What a harness needs in its sandbox before it starts: extra env and files, per harness.

Each harness names its hook in the registry (``Harness.setup``, a dotted path); a hook takes a
``HarnessContext`` (the agent's model and prompt, the working directory, the env so far —
the sandbox's layout, the platform's variables and the **stubs**, never a secret value) and
returns a ``HarnessSetup``. ``harness_setup`` adds what every harness gets:

- the LLM gateway (``LITELLM_API_BASE``) and the agent's repository (``REPO_URL``) are never
  in ``NO_PROXY``: their credentials are stubs, so a request that bypassed the vault could not
  authenticate. (A host on the platform's loopback is reached through the vault too: the
  sandbox's loopback is its own.)
- a git credential helper in ``~/.gitconfig`` answering with the stub of ``GIT_TOKEN``,
  ``GITHUB_TOKEN`` or ``GH_TOKEN`` (read from the env at use, never written down), which
  the vault swaps for the real token on the wire — for the bring-up clone and later pushes.

Hooks: ``claude_code`` and ``codex`` (TUI), ``claude_agent_sdk`` and ``opencode`` (API). All
run with the harness's own permission prompts off: the sandbox is the boundary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from django.utils.module_loading import import_string

from agents.harnesses import Harness

HOME = "/work"
GIT_TOKENS = ("GIT_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
# Claude Code remembers approved API keys by their last 20 characters.
CLAUDE_KEY_SUFFIX = 20
GIT_CREDENTIAL_HELPER = (
    '!f() { test \\"$1\\" = get || exit 0; '
    't=\\"${GIT_TOKEN:-${GITHUB_TOKEN:-$GH_TOKEN}}\\"; test -n \\"$t\\" || exit 0; '
    'echo username=x-access-token; echo \\"password=$t\\"; }; f'
)


@dataclass(frozen=True)
class HarnessFile:
    path: str  # absolute, inside the sandbox
    content: str
    mode: int = 0o600


@dataclass(frozen=True)
class HarnessContext:
    harness: Harness
    model: str
    prompt: str
    workdir: str  # where the harness starts: the clone, or the home directory
    env: Mapping[str, str]  # the harness env so far (stubs, never values)

    @property
    def llm_base(self) -> str:
        return self.env.get("LITELLM_API_BASE", "").rstrip("/")

    @property
    def llm_key(self) -> str:
        """The stub of ``LITELLM_API_KEY`` (empty when the platform has no gateway key)."""
        return self.env.get("LITELLM_API_KEY", "")


@dataclass(frozen=True)
class HarnessSetup:
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[HarnessFile, ...] = ()


def harness_setup(context: HarnessContext) -> HarnessSetup:
    """The harness's own hook plus what every harness gets (see the module docstring)."""
    hook = context.harness.setup
    own = import_string(hook)(context) if hook else HarnessSetup()
    env = {**_through_the_vault(context), **own.env}
    files = own.files
    if any(context.env.get(name) for name in GIT_TOKENS):
        files += (_file(".gitconfig", f'[credential]\n\thelper = "{GIT_CREDENTIAL_HELPER}"\n'),)
    return HarnessSetup(env, files)


def _through_the_vault(context: HarnessContext) -> dict[str, str]:
    """``NO_PROXY``/``no_proxy`` without the gateway's and the repository's hosts."""
    urls = (context.llm_base, context.env.get("REPO_URL", ""))
    hosts = {(urlsplit(url).hostname or "").lower() for url in urls if url} - {""}
    return {
        name: ",".join(h for h in context.env[name].split(",") if h.strip().lower() not in hosts)
        for name in ("NO_PROXY", "no_proxy")
        if hosts and name in context.env
    }


def _file(relative: str, content: str, mode: int = 0o600) -> HarnessFile:
    return HarnessFile(f"{HOME}/{relative}", content, mode)


def claude_code(context: HarnessContext) -> HarnessSetup:
    """Claude Code: the gateway and the stub key, the model, and no first-run prompts.

    ``~/.claude.json`` pre-answers onboarding, the trust dialog for the working directory,
    the bypass-permissions warning and the custom-API-key approval (for the stub);
    ``~/.claude/settings.json`` turns permission prompts off; the agent prompt is the user
    memory ``~/.claude/CLAUDE.md``. Only ``ANTHROPIC_API_KEY`` is set (with
    ``ANTHROPIC_AUTH_TOKEN`` too the CLI warns of an auth conflict on every start). An agent
    that has its own ``ANTHROPIC_API_KEY`` keeps it and Anthropic's API.
    """
    env = {"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    key = context.env.get("ANTHROPIC_API_KEY", "")
    if not key and context.llm_base:
        env["ANTHROPIC_BASE_URL"] = context.llm_base
        key = context.llm_key
        if key:
            env["ANTHROPIC_API_KEY"] = key
    if context.model:
        env["ANTHROPIC_MODEL"] = context.model
        env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = context.model  # background calls, same gateway
    state: dict[str, object] = {
        "hasCompletedOnboarding": True,
        "bypassPermissionsModeAccepted": True,
        "projects": {
            context.workdir: {
                "hasTrustDialogAccepted": True,
                "hasCompletedProjectOnboarding": True,
                "projectOnboardingSeenCount": 1,
            }
        },
    }
    if key:
        state["customApiKeyResponses"] = {"approved": [key[-CLAUDE_KEY_SUFFIX:]], "rejected": []}
    settings = {"permissions": {"defaultMode": "bypassPermissions"}}
    files = [
        _file(".claude.json", json.dumps(state, indent=2)),
        _file(".claude/settings.json", json.dumps(settings, indent=2)),
    ]
    if context.prompt:
        files.append(_file(".claude/CLAUDE.md", context.prompt, 0o644))
    return HarnessSetup(env, tuple(files))


def codex(context: HarnessContext) -> HarnessSetup:
    """Codex: ``~/.codex/config.toml`` with the gateway as provider ``lap`` (Responses API,
    key from ``OPENAI_API_KEY`` = the stub), the model, no approvals and codex's own sandbox
    off, the working directory trusted, and no background app-server daemon (it would copy
    the 420 MB CLI into ``~/.codex/packages`` and run an updater); the agent prompt is
    ``~/.codex/AGENTS.md``."""
    env: dict[str, str] = {}
    config = ['approval_policy = "never"', 'sandbox_mode = "danger-full-access"']
    if context.model:
        config.append(f"model = {_toml(context.model)}")
    if context.llm_base:
        api = context.llm_base if context.llm_base.endswith("/v1") else context.llm_base + "/v1"
        env["OPENAI_BASE_URL"] = api
        if context.llm_key and not context.env.get("OPENAI_API_KEY"):
            env["OPENAI_API_KEY"] = context.llm_key
        config += [
            'model_provider = "lap"',
            "",
            "[model_providers.lap]",
            'name = "LAP LLM gateway"',
            f"base_url = {_toml(api)}",
            'env_key = "OPENAI_API_KEY"',
            'wire_api = "responses"',
        ]
    config += ["", "[features]", "daemon_auto_start = false"]
    config += ["", f"[projects.{_toml(context.workdir)}]", 'trust_level = "trusted"', ""]
    files = [_file(".codex/config.toml", "\n".join(config))]
    if context.prompt:
        files.append(_file(".codex/AGENTS.md", context.prompt, 0o644))
    return HarnessSetup(env, tuple(files))


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def claude_agent_sdk(context: HarnessContext) -> HarnessSetup:
    """The Agent SDK drives the same CLI: Claude Code's env and settings; the SDK worker adds
    the agent prompt to the system prompt itself (``AGENT_PROMPT``), so no ``CLAUDE.md``."""
    return claude_code(replace(context, prompt=""))


def opencode(context: HarnessContext) -> HarnessSetup:
    """opencode: ``~/.config/opencode/opencode.json`` with the gateway as provider ``litellm``
    (its bundled ``@ai-sdk/anthropic`` at ``<gateway>/v1``, the key read from the env: the
    stub), the model, tools allowed, no update checks or model-list fetches; the agent prompt
    is ``~/.config/opencode/AGENTS.md``. Without a gateway, a ``provider/model`` model is
    opencode's own provider (its key an agent secret).

    opencode's hosted models (provider ``opencode``) are always disabled: with no other
    provider set up, opencode silently took them, and the sandbox's prompts and code went to
    opencode.ai; now such a turn fails with opencode's error instead.
    """
    env = {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"}
    config: dict[str, object] = {
        "autoupdate": False,
        "share": "disabled",
        "disabled_providers": ["opencode"],
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "allow"},
    }
    if context.llm_base:
        api = context.llm_base if context.llm_base.endswith("/v1") else context.llm_base + "/v1"
        options = {"baseURL": api, "apiKey": "{env:LITELLM_API_KEY}"}
        provider: dict[str, object] = {
            "npm": "@ai-sdk/anthropic",
            "name": "LAP LLM gateway",
            "options": options,
        }
        if context.model:
            provider["models"] = {context.model: {"name": context.model}}
            config["model"] = f"litellm/{context.model}"
        config["provider"] = {"litellm": provider}
    elif "/" in context.model:
        config["model"] = context.model
    files = [_file(".config/opencode/opencode.json", json.dumps(config, indent=2))]
    if context.prompt:
        files.append(_file(".config/opencode/AGENTS.md", context.prompt, 0o644))
    return HarnessSetup(env, tuple(files))
