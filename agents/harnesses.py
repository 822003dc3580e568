"""The harness registry: which agent programs a sandbox can run, and how.

A TUI harness runs under the runner's PTY and people attach to it with a
terminal (``lap``, the browser). An API harness runs without a terminal: the
runner drives it turn by turn (``POST /sessions/{id}/message``; see
docs/runner-protocol.md, "API harnesses").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Harness:
    """One harness. ``requires``: programs that must be on the sandbox's PATH (the session
    fails naming ``make harnesses`` otherwise); ``setup``: the dotted path of its setup hook
    (``sandboxes.harness_setup``: the env and files it needs), empty for none."""

    id: str
    title: str
    supports_tui: bool
    argv: tuple[str, ...]  # what the runner starts (``POST /start``)
    needs_llm: bool = True
    requires: tuple[str, ...] = ()
    setup: str = ""


HARNESSES: dict[str, Harness] = {
    harness.id: harness
    for harness in (
        Harness("shell", "Shell (bash)", supports_tui=True, argv=("bash", "-l"), needs_llm=False),
        Harness(
            "claude-code",
            "Claude Code",
            supports_tui=True,
            argv=("claude",),
            requires=("claude",),
            setup="sandboxes.harness_setup.claude_code",
        ),
        Harness(
            "codex",
            "Codex",
            supports_tui=True,
            argv=("codex",),
            requires=("codex",),
            setup="sandboxes.harness_setup.codex",
        ),
        Harness(
            "opencode",
            "opencode",
            supports_tui=False,
            argv=("opencode", "serve", "--hostname", "127.0.0.1", "--port", "4096"),
            requires=("opencode",),
            setup="sandboxes.harness_setup.opencode",
        ),
        Harness(
            "claude-agent-sdk",
            "Claude Agent SDK",
            supports_tui=False,
            # The runner's SDK worker; the runner checks at /start that the SDK imports.
            argv=("python3", "-m", "sandboxes.runner.sdk_worker"),
            setup="sandboxes.harness_setup.claude_agent_sdk",
        ),
    )
}


# What an agent created without a ``harness_id`` runs: LAP's default, so its clients' create
# requests (which need not name one) mean the same here.
DEFAULT_HARNESS = "opencode"


def harness_get(harness_id: str) -> Harness | None:
    return HARNESSES.get(harness_id)


def harness_ids() -> list[str]:
    return list(HARNESSES)
