"""API harnesses under the runner: ``/start`` with ``api``, ``/turn``, ``/abort``, ``/events``.

The harnesses are real — the Agent SDK worker with the SDK's bundled ``claude`` CLI, and
``opencode serve`` — against the fake LLM gateway (TLS on loopback, no vault here: the
platform tests cover the vault). Tests that need them skip with the reason when
``make harnesses`` has not installed them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

import httpx
import pytest

from sandboxes.runner.sdk import SdkHarness
from sandboxes.runner_client import RunnerError
from tests.fakellm import FakeGateway, Text, Thinking, ToolCall, Turn, failure
from tests.harness_tools import require_cli
from tests.live import free_port

from .conftest import SHELL, SHELL_ENV, TOKEN

KEY = "sk-fake-gateway-key-1234"
MODEL = "claude-sonnet-4-5"
SDK_WORKER = [sys.executable, "-m", "sandboxes.runner.sdk_worker"]


def need_sdk() -> Path:
    return require_cli("claude-agent-sdk") / "python"


def need_opencode() -> Path:
    return require_cli("opencode") / "node" / "node_modules" / ".bin" / "opencode"


@pytest.fixture
def gateway():
    with FakeGateway(key=KEY) as gateway:
        yield gateway


def sdk_env(gateway: FakeGateway, home: Path, sdk_path: Path | str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": gateway.base_url,
        "ANTHROPIC_API_KEY": KEY,
        "NODE_EXTRA_CA_CERTS": str(gateway.ca_path),
        "HARNESS_PYTHONPATH": str(sdk_path),
        "LITELLM_DEFAULT_MODEL": MODEL,
        # These tests run the runner as root outside a jail; the CLI refuses to skip
        # permission prompts as root unless it is told it is in a sandbox.
        "IS_SANDBOX": "1",
    }


@pytest.fixture
def sdk_runner(runner, gateway, workdir):
    home = workdir / "home"
    home.mkdir()
    runner.client.start(
        SDK_WORKER, sdk_env(gateway, home, need_sdk()), cwd=str(home), api="claude-agent-sdk"
    )
    return runner


def text(value: str) -> list[dict]:
    return [{"type": "text", "text": value}]


async def run_turn(client, value: str) -> tuple[list[dict], dict]:
    """Every event of one turn, and its final line."""
    events = []
    async for line in client.turn(text(value)):
        if line["type"] == "event":
            events.append(line["event"])
        else:
            return events, line
    raise AssertionError("the turn ended without a final line")


def last_user_text(request) -> str:
    """The text of the last user message the model got (the CLI may add reminders to it)."""
    content = request.json["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


# --- the protocol, without a harness installed ----------------------------------------


async def test_turn_needs_an_api_harness(runner):
    with pytest.raises(RunnerError) as before_start:
        await run_turn(runner.client, "hi")
    assert before_start.value.status == 409
    assert "was not started" in str(before_start.value)
    runner.client.start(SHELL, SHELL_ENV, cwd=str(runner.directory))
    with pytest.raises(RunnerError) as terminal:
        await run_turn(runner.client, "hi")
    assert terminal.value.status == 409
    assert "runs in a terminal" in str(terminal.value)
    with pytest.raises(RunnerError) as abort:
        runner.client.abort()
    assert abort.value.status == 409


def test_start_rejects_an_unknown_api_harness(runner):
    with pytest.raises(RunnerError) as exc:
        runner.client.start(["true"], {}, cwd="/tmp", api="gemini")
    assert exc.value.status == 400
    assert "unknown api harness 'gemini'" in str(exc.value)
    assert runner.client.health()["started"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "parts must be a non-empty list"),
        ({"parts": []}, "parts must be a non-empty list"),
        ({"parts": [{"type": "image"}]}, '{"type": "text"'),
        ({"parts": [{"type": "text", "text": 3}]}, "string text"),
    ],
)
def test_turn_rejects_bad_parts(runner, body, message):
    # Any process will do as the harness: the parts are checked before it is asked.
    runner.client.start(["sleep", "600"], SHELL_ENV, cwd="/tmp", api="opencode")
    assert runner.client.abort() is False
    transport = httpx.HTTPTransport(uds=runner.url.removeprefix("unix://"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url="http://runner", transport=transport, headers=headers) as http:
        reply = http.post("/turn", json=body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


def test_a_worker_without_the_sdk_does_not_start(runner, gateway, workdir):
    env = sdk_env(gateway, workdir, workdir / "no-sdk-here")
    with pytest.raises(RunnerError) as exc:
        runner.client.start(SDK_WORKER, env, cwd=str(workdir), api="claude-agent-sdk")
    assert exc.value.status == 400
    message = str(exc.value)
    assert "the Agent SDK worker exited with status 1" in message
    assert "No module named 'claude_agent_sdk'" in message
    assert "make harnesses" in message
    assert runner.client.health()["started"] is False


# --- claude-agent-sdk ---------------------------------------------------------------


async def test_sdk_turns_stream_and_resume_the_session(sdk_runner, gateway):
    gateway.script("Noted the fruit.", "You said papaya.")
    events, final = await run_turn(sdk_runner.client, "Remember the word PAPAYA.")
    assert final["type"] == "done", final
    message = final["message"]
    assert message["info"]["role"] == "assistant"
    assert "error" not in message["info"]
    assert [(p["type"], p["text"]) for p in message["parts"]] == [("text", "Noted the fruit.")]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message.updated" and kinds[-1] == "session.idle"
    assert "message.part.updated" in kinds
    _, second = await run_turn(sdk_runner.client, "Which word?")
    assert second["message"]["parts"][-1]["text"] == "You said papaya."
    assert second["message"]["info"]["sessionID"] == message["info"]["sessionID"] != ""
    last = gateway.model_requests()[-1]
    assert "Remember the word PAPAYA." in last.text()  # the first turn, resumed
    assert last_user_text(last).endswith("Which word?")
    assert gateway.credentials() == {KEY}


async def test_sdk_tool_use_runs_the_tool_in_the_working_directory(sdk_runner, gateway):
    gateway.script(ToolCall("Bash", {"command": "echo made-by-the-tool > made.txt; cat made.txt"}))
    gateway.script("The file is there.")
    _, final = await run_turn(sdk_runner.client, "Make a file.")
    parts = final["message"]["parts"]
    tool = next(part for part in parts if part["type"] == "tool")
    assert tool["tool"] == "Bash"
    assert tool["state"]["status"] == "completed"
    assert tool["state"]["output"].strip() == "made-by-the-tool"
    assert parts[-1] == {**parts[-1], "type": "text", "text": "The file is there."}
    assert (sdk_runner.directory / "home" / "made.txt").read_text() == "made-by-the-tool\n"


async def test_sdk_thinking_becomes_a_reasoning_part(sdk_runner, gateway):
    gateway.script(Turn([Thinking("Weighing the options."), Text("Option B.")]))
    events, final = await run_turn(sdk_runner.client, "Which option?")
    parts = final["message"]["parts"]
    assert [(p["type"], p["text"]) for p in parts] == [
        ("reasoning", "Weighing the options."),
        ("text", "Option B."),
    ]
    streamed = [
        e["properties"]["delta"]
        for e in events
        if e["type"] == "message.part.delta" and e["properties"]["partID"] == parts[0]["id"]
    ]
    assert "".join(streamed) == "Weighing the options."


def retries(events: list[dict]) -> list[dict]:
    """The ``retry`` statuses of a turn's events: the harness waits for a failed model call."""
    return [
        event["properties"]["status"]
        for event in events
        if event["type"] == "session.status" and event["properties"]["status"]["type"] == "retry"
    ]


async def test_sdk_reports_a_retried_model_request(sdk_runner, gateway):
    gateway.script(failure(503), "Answered on the second try.")
    events, final = await run_turn(sdk_runner.client, "Hello?")
    assert final["type"] == "done", final
    assert [p["text"] for p in final["message"]["parts"] if p["type"] == "text"] == [
        "Answered on the second try."
    ]
    [retry] = retries(events)
    assert retry["attempt"] == 1 and retry["maxAttempts"] >= 1
    assert retry["message"] == "the model API answered 503 (server_error)"
    assert retry["next"] >= final["message"]["info"]["time"]["created"]


async def test_sdk_abort_ends_the_turn_and_the_next_turn_works(sdk_runner, gateway):
    hold = threading.Event()
    gateway.script(Turn([Text("The beginning of a long story that goes on")], hold=hold))
    gateway.script("Short answer.")
    client = sdk_runner.client
    try:
        turn = client.turn(text("Tell me a long story."))
        async for line in turn:
            if line["type"] == "event" and line["event"]["type"] == "message.part.delta":
                break
        assert client.health()["turn"] is True
        with pytest.raises(RunnerError) as busy:
            await run_turn(client, "me too")
        assert busy.value.status == 409
        assert client.abort() is True
        async for line in turn:
            final = line
        assert final["type"] == "done"
        assert final["message"]["info"]["error"]["name"] == "MessageAbortedError"
        assert final["message"]["parts"][0]["text"].startswith("The begi")
    finally:
        hold.set()
    assert client.health()["turn"] is False
    _, after = await run_turn(client, "Shorter please.")
    assert after["message"]["parts"][-1]["text"] == "Short answer."


async def test_sdk_abort_right_behind_the_turn_is_not_lost(gateway, workdir):
    """Both lines reach the worker in one read: the abort lands before the turn's task runs."""
    gateway.script("Not aborted.")
    home = workdir / "home"
    home.mkdir()
    worker = await SdkHarness.spawn(SDK_WORKER, sdk_env(gateway, home, need_sdk()), str(home))
    process = worker.child.process
    try:
        lines = [{"op": "turn", "parts": text("Hello.")}, {"op": "abort"}]
        process.stdin.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        await process.stdin.drain()
        async with asyncio.timeout(60):
            while (line := json.loads(await process.stdout.readline()))["type"] == "event":
                pass
    finally:
        await worker.close()
    assert line["type"] == "done", line
    assert line["message"]["info"]["error"]["name"] == "MessageAbortedError"
    assert gateway.pending == 1  # the model was never asked


async def test_events_replay_the_turn_in_flight_then_follow_it(sdk_runner, gateway):
    hold = threading.Event()
    gateway.script(Turn([Text("Streaming slowly, word by word")], hold=hold))
    client = sdk_runner.client
    try:
        turn = client.turn(text("Go."))
        seen = []
        async for line in turn:
            seen.append(line)
            if line["type"] == "event" and line["event"]["type"] == "message.part.delta":
                break
        tail = client.events()
        replayed = [await anext(tail) for _ in seen]
        assert replayed == seen
    finally:
        hold.set()
    rest = [line async for line in turn]
    async for line in tail:
        if line["type"] == "done":
            assert line == rest[-1]
            break
    await tail.aclose()


async def test_history_goes_before_the_first_turn_only(runner, gateway, workdir):
    home = workdir / "home"
    home.mkdir()
    history = [
        {"role": "user", "parts": text("My name is Ada.")},
        {"role": "assistant", "parts": text("Hello Ada.")},
    ]
    env = sdk_env(gateway, home, need_sdk())
    runner.client.start(SDK_WORKER, env, cwd=str(home), api="claude-agent-sdk", history=history)
    gateway.script("Welcome back.", "Still here.")
    await run_turn(runner.client, "Who am I?")
    first = last_user_text(gateway.model_requests()[-1])
    assert "<previous_session_history>" in first
    assert "My name is Ada." in first and "Hello Ada." in first
    assert first.endswith("Who am I?")
    await run_turn(runner.client, "And now?")
    second = last_user_text(gateway.model_requests()[-1])
    assert second.endswith("And now?")
    assert "previous_session_history" not in second


async def test_a_client_that_leaves_aborts_its_turn(sdk_runner, gateway):
    hold = threading.Event()
    gateway.script(Turn([Text("This reply will be cut short")], hold=hold))
    client = sdk_runner.client
    try:
        tail = client.events()
        turn = client.turn(text("Start."))
        async for line in turn:
            if line["type"] == "event" and line["event"]["type"] == "message.part.delta":
                break
        await turn.aclose()
        async with asyncio.timeout(30):
            async for line in tail:
                if line["type"] == "done":
                    break
        assert line["message"]["info"]["error"]["name"] == "MessageAbortedError"
        await tail.aclose()
    finally:
        hold.set()
    assert client.health()["turn"] is False


# --- opencode -------------------------------------------------------------------------


def write_opencode_config(directory: Path, gateway: FakeGateway) -> None:
    config = {
        "model": f"litellm/{MODEL}",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            "litellm": {
                "npm": "@ai-sdk/anthropic",
                "options": {"baseURL": f"{gateway.base_url}/v1", "apiKey": KEY},
                "models": {MODEL: {}},
            }
        },
        "permission": {"edit": "allow", "bash": "allow"},
    }
    (directory / "opencode.json").write_text(json.dumps(config))


def start_opencode(runner, gateway, workdir) -> tuple[Path, int]:
    """opencode serve under the runner, configured for the fake gateway; (its cwd, its pid)."""
    opencode = need_opencode()
    work, home = workdir / "work", workdir / "home"
    work.mkdir()
    home.mkdir()
    write_opencode_config(work, gateway)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "NODE_EXTRA_CA_CERTS": str(gateway.ca_path),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }
    argv = [str(opencode), "serve", "--hostname", "127.0.0.1", "--port", str(free_port())]
    started = runner.client.start(argv, env, cwd=str(work), api="opencode")
    return work, started["pid"]


async def test_opencode_turns_with_a_tool(runner, gateway, workdir):
    work, _ = start_opencode(runner, gateway, workdir)
    gateway.script("Plain answer.")
    gateway.script(ToolCall("bash", {"command": "echo oc-tool > oc.txt", "description": "write"}))
    gateway.script("Wrote it.")
    events, final = await run_turn(runner.client, "Hello there.")
    assert final["type"] == "done", final
    assert [p["text"] for p in final["message"]["parts"] if p["type"] == "text"] == [
        "Plain answer."
    ]
    assert not any("Hello there." in json.dumps(event) for event in events)  # no user echo
    assert "message.part.delta" in [event["type"] for event in events]
    _, second = await run_turn(runner.client, "Write a file.")
    parts = second["message"]["parts"]
    tool = next(part for part in parts if part["type"] == "tool")
    assert tool["state"]["status"] == "completed"
    assert [p["text"] for p in parts if p["type"] == "text"] == ["Wrote it."]
    assert (work / "oc.txt").read_text() == "oc-tool\n"
    assert "Hello there." in gateway.model_requests()[-1].text()
    assert gateway.credentials() == {KEY}


async def test_opencode_reports_a_retried_model_request(runner, gateway, workdir):
    start_opencode(runner, gateway, workdir)
    gateway.script(failure(503), "Answered on the second try.")
    events, final = await run_turn(runner.client, "Hello?")
    assert final["type"] == "done", final
    [retry] = retries(events)
    assert retry["attempt"] == 1 and retry["message"]


async def test_opencode_ends_a_turn_whose_model_keeps_failing(runner, gateway, workdir):
    # opencode retries a failed model request a few times (after retry-after-ms, when the
    # answer gives one), then fails the turn with the error: the turn ends, it never hangs.
    start_opencode(runner, gateway, workdir)
    gateway.script(*[failure(503, retry_after_ms=10)] * 20)
    events, final = await run_turn(runner.client, "Hello?")
    assert final["type"] == "done", final
    error = final["message"]["info"]["error"]
    assert (error["name"], error["data"]["message"]) == ("APIError", "scripted failure 503")
    attempts = [retry["attempt"] for retry in retries(events)]
    assert attempts == list(range(1, len(gateway.model_requests())))
    assert gateway.pending > 0
    assert runner.client.health()["turn"] is False


async def test_opencode_turn_aborted_while_it_waits_to_retry_says_it_was_aborted(
    runner, gateway, workdir
):
    start_opencode(runner, gateway, workdir)
    gateway.script(failure(503), failure(503), failure(503), failure(503))
    turn = runner.client.turn(text("Hello?"))
    async for line in turn:
        if line["type"] == "event" and retries([line["event"]]):
            break
    assert runner.client.abort() is True
    final = [line async for line in turn][-1]
    assert final["type"] == "done", final
    assert final["message"]["info"]["error"]["name"] == "MessageAbortedError"


async def test_opencode_dying_mid_turn_ends_it_with_the_reason(runner, gateway, workdir):
    _, pid = start_opencode(runner, gateway, workdir)
    hold = threading.Event()
    gateway.script(Turn([Text("Halfway through this reply")], hold=hold))
    try:
        turn = runner.client.turn(text("Go on."))
        async for line in turn:
            if line["type"] == "event" and line["event"]["type"] == "message.part.delta":
                break
        os.kill(pid, signal.SIGKILL)
        final = [line async for line in turn][-1]
    finally:
        hold.set()
    assert final["type"] == "error"
    assert final["error"].startswith("opencode exited with status 137")
    assert runner.client.health() == {**runner.client.health(), "exit_code": 137, "turn": False}
