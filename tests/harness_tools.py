"""Where the harness CLIs are for tests (``make harnesses``), and skipping when one is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIS = {  # name → path inside the tools directory
    "claude": "node/node_modules/.bin/claude",
    "codex": "node/node_modules/.bin/codex",
    "opencode": "node/node_modules/.bin/opencode",
    "node": "node/node_modules/.bin/node",  # the sandboxes' Node.js, first on their PATH
    "claude-agent-sdk": "python/claude_agent_sdk/_bundled/claude",
}


def tools_dir() -> Path:
    """``LAP_TOOLS_DIR`` as the platform resolves it (default ``<repo>/.lap-tools``)."""
    return Path(os.environ.get("LAP_TOOLS_DIR") or ROOT / ".lap-tools")


def require_cli(name: str) -> Path:
    """The tools directory; skips the test (with the reason) when ``name`` is not installed."""
    tools = tools_dir()
    if not os.access(tools / CLIS[name], os.X_OK):
        pytest.skip(f"the {name} CLI is not installed in {tools}: run `make harnesses`")
    return tools
