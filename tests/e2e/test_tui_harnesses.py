"""Issue 8, end to end: the real ``claude`` and ``codex`` CLIs in real sandboxes, through the vault.

The LLM gateway is the fake one (``tests/fakellm``) over TLS on 127.0.0.1 with a trustme
certificate the vault trusts (``LAP_VAULT_UPSTREAM_CA``); it demands the platform's real
``LITELLM_API_KEY``, which only the vault holds. The sandbox gets the stub. A test types a
prompt into the terminal (the platform's WebSocket), the scripted model calls a shell tool,
the CLI runs it in the sandbox and sends the result back, and the final answer must appear on
the rendered screen. The repo clone goes to a local git smart-HTTP server that demands the
real token, through the same vault.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil

import pyte
import pytest
import trustme

from tests.e2e.terminal import attach, resize
from tests.e2e.test_exec_and_recording import run
from tests.fakellm import ANTHROPIC, RESPONSES, FakeGateway, ToolCall
from tests.gitserver import GitServer
from tests.harness_tools import require_cli, tools_dir
from tests.live import LivePlatform

REAL_KEY = "sk-litellm-real-" + secrets.token_hex(16)
REAL_GITHUB_TOKEN = "ghp_real_" + secrets.token_hex(16)
STUB_KEY = re.compile(r"lap_stub_LITELLM_API_KEY_[0-9a-f]{32}")
COLS, ROWS = 120, 40
NON_STREAMING = (
    'curl -sS -m 30 "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" '
    "-H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' "
    """-d '{"model": "claude-sonnet-4-5", "max_tokens": 64, """
    """"messages": [{"role": "user", "content": "hi"}]}'"""
)
# Every environment of every process in the sandbox, one variable per line.
ALL_ENVIRONS = "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done 2>/dev/null"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("upstream") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture(scope="module")
def gateway(ca):
    with FakeGateway(key=REAL_KEY, ca=ca[0]) as server:
        yield server


@pytest.fixture(scope="module")
def git(ca):
    server = GitServer(token=REAL_GITHUB_TOKEN, ca=ca[0])
    server.create_repo("demo", {"README.md": "cloned through the vault\n"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform(ca, gateway):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    live = LivePlatform()
    live.env.update(
        LAP_VAULT_UPSTREAM_CA=str(ca[1]),
        LAP_TOOLS_DIR=str(tools_dir()),
        LITELLM_API_BASE=gateway.base_url,
        LITELLM_API_KEY=REAL_KEY,
    )
    live.start()
    yield live
    live.stop()


class Terminal:
    """The platform's terminal WebSocket, rendered by a terminal model of the same size."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)

    @classmethod
    async def open(cls, platform, session: dict) -> Terminal:
        ws = await attach(platform.tty_url(session), session["tty_token"])
        await resize(ws, COLS, ROWS)
        return cls(ws)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    async def wait_for(self, needle: str, timeout: float = 90) -> str:
        """Feed output to the screen until it shows ``needle``; the screen on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while needle not in self.text():
                    frame = await self.ws.recv()
                    self.stream.feed(frame if isinstance(frame, bytes) else b"")
        except TimeoutError:
            pytest.fail(f"{needle!r} never appeared on the screen:\n{self.text()}")
        return self.text()

    async def type(self, text: str) -> None:
        await self.ws.send(text.encode())
        await asyncio.sleep(0.5)  # a TUI reads a paste and an Enter apart
        await self.ws.send(b"\r")


def sandbox_environs(platform, session_id: str) -> str:
    status, events = run(platform, session_id, {"argv": ["sh", "-c", ALL_ENVIRONS]})
    assert status == 200, events
    return "".join(e.get("data", "") for e in events)


def assert_only_stubs_inside(platform, session_id: str, variable: str) -> None:
    environs = sandbox_environs(platform, session_id)
    assert REAL_KEY not in environs
    values = {line.split("=", 1)[1] for line in environs.splitlines() if line.startswith(variable)}
    assert values and all(STUB_KEY.fullmatch(value) for value in values), values


def new_requests(gateway: FakeGateway, since: int, api: str) -> list:
    return [r for r in gateway.requests[since:] if r.api == api]


async def test_claude_code_streams_a_tool_turn_through_the_vault(platform, gateway):
    tools = require_cli("claude")
    assert tools.is_dir()
    platform.create_agent(
        "e2e-claude",
        harness_id="claude-code",
        model="claude-sonnet-4-5",
        prompt="LAP-AGENT-PROMPT-7f3a",
        allow_out=["127.0.0.1"],
    )
    since = len(gateway.requests)
    gateway.script(
        ToolCall("Bash", {"command": "echo tool-ran-$((6*7))", "description": "Say 42"}),
        "The tool printed it: CLAUDE-REPLY-OK",
    )
    session = platform.ready_session("e2e-claude")
    terminal = await Terminal.open(platform, session)
    try:
        await terminal.wait_for("bypass permissions")  # no onboarding, trust or key prompt
        await terminal.type("run the greeting tool")
        screen = await terminal.wait_for("CLAUDE-REPLY-OK")
    finally:
        await terminal.ws.close()
    assert "tool-ran-42" in screen  # the tool ran in the sandbox and its output is shown
    scripted = [r for r in new_requests(gateway, since, ANTHROPIC) if r.scripted]
    assert len(scripted) == 2
    assert all(r.json.get("stream") is True for r in scripted)
    assert "LAP-AGENT-PROMPT-7f3a" in scripted[0].text()  # ~/.claude/CLAUDE.md was read
    results = [
        block
        for message in scripted[1].json["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert "tool-ran-42" in json.dumps(results)
    # The vault swapped the stub for the real key on every model request.
    assert {r.credential for r in new_requests(gateway, since, ANTHROPIC)} == {REAL_KEY}
    assert_only_stubs_inside(platform, session["id"], "ANTHROPIC_API_KEY=")
    # A non-streaming Messages call from the sandbox with the harness's env takes the same way.
    since = len(gateway.requests)
    status, events = run(platform, session["id"], {"argv": ["sh", "-c", NON_STREAMING]})
    reply = json.loads("".join(e.get("data", "") for e in events))
    assert status == 200 and events[-1] == {"exit_code": 0}
    assert reply["type"] == "message" and reply["content"][0]["type"] == "text"
    (request,) = new_requests(gateway, since, ANTHROPIC)
    assert request.credential == REAL_KEY and "stream" not in request.json
    platform.api("DELETE", f"/sessions/{session['id']}")


async def test_codex_runs_a_tool_turn_against_the_responses_api_through_the_vault(
    platform, gateway
):
    require_cli("codex")
    platform.create_agent(
        "e2e-codex",
        harness_id="codex",
        model="gpt-5-codex",
        prompt="LAP-CODEX-PROMPT-19c2",
        allow_out=["127.0.0.1"],
    )
    since = len(gateway.requests)
    gateway.script(
        ToolCall("exec_command", {"cmd": "echo codex-tool-$((6*7))"}),
        "Codex saw it: CODEX-REPLY-OK",
    )
    session = platform.ready_session("e2e-codex")
    terminal = await Terminal.open(platform, session)
    try:
        await terminal.wait_for("Ask Codex")  # no trust or login prompt
        await terminal.type("run the greeting tool")
        screen = await terminal.wait_for("CODEX-REPLY-OK")
    finally:
        await terminal.ws.close()
    assert "codex-tool-42" in screen or "codex-tool-$((6*7))" in screen
    scripted = [r for r in new_requests(gateway, since, RESPONSES) if r.scripted]
    assert len(scripted) == 2
    assert all(r.json.get("stream") is True for r in scripted)
    assert "LAP-CODEX-PROMPT-19c2" in scripted[0].text()  # ~/.codex/AGENTS.md was read
    outputs = [i for i in scripted[1].json["input"] if i.get("type") == "function_call_output"]
    assert "codex-tool-42" in json.dumps(outputs)
    assert {r.credential for r in new_requests(gateway, since, RESPONSES)} == {REAL_KEY}
    assert_only_stubs_inside(platform, session["id"], "OPENAI_API_KEY=")
    # No background app-server daemon copying the CLI into the home directory.
    status, events = run(platform, session["id"], {"argv": ["ls", "/work/.codex"]})
    assert status == 200 and "packages" not in "".join(e.get("data", "") for e in events)
    platform.api("DELETE", f"/sessions/{session['id']}")


def test_repo_is_cloned_through_the_vault_with_the_real_token_only_outside(platform, git):
    platform.create_agent(
        "e2e-clone",
        repo_url=git.url("demo"),
        branch="main",
        env_vars={"GITHUB_TOKEN": REAL_GITHUB_TOKEN},
        env_var_hosts={"GITHUB_TOKEN": ["127.0.0.1"]},
        allow_out=["127.0.0.1"],
    )
    session = platform.ready_session("e2e-clone")
    status, events = run(
        platform, session["id"], {"argv": ["sh", "-c", "pwd; cat README.md; git log --oneline"]}
    )
    output = "".join(e.get("data", "") for e in events)
    assert status == 200 and events[-1] == {"exit_code": 0}, output
    assert output.startswith("/work/repo\ncloned through the vault\n")
    assert "first commit" in output
    environs = sandbox_environs(platform, session["id"])
    gitconfig = "".join(
        e.get("data", "")
        for e in run(platform, session["id"], {"argv": ["cat", "/work/.gitconfig"]})[1]
    )
    assert REAL_GITHUB_TOKEN not in environs + gitconfig
    assert re.search(r"GITHUB_TOKEN=lap_stub_GITHUB_TOKEN_[0-9a-f]{32}", environs)
    authorised = [a for _, _, a in git.received if a]
    assert authorised and all(git.authorised(a) for a in authorised)  # the real token arrived
    platform.api("DELETE", f"/sessions/{session['id']}")


def test_a_clone_the_server_refuses_fails_the_session_with_gits_reason(platform, git):
    platform.create_agent(
        "e2e-clone-refused",
        repo_url=git.url("demo"),
        env_vars={"GITHUB_TOKEN": "ghp_wrong_" + secrets.token_hex(8)},
        env_var_hosts={"GITHUB_TOKEN": ["127.0.0.1"]},
        allow_out=["127.0.0.1"],
    )
    reply = platform.api("POST", "/agents/e2e-clone-refused/session", json={})
    session = platform.wait_status(reply.json()["id"], timeout=120)
    assert session["status"] == "failed"
    assert session["failure_reason"].startswith(f"cloning {git.url('demo')} (branch main) failed")
    assert "Authentication failed" in session["failure_reason"]
