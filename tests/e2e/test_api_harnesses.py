"""Issue 8, end to end: the API harnesses in real sandboxes, through the vault.

The Agent SDK worker runs the SDK's bundled ``claude`` CLI, and ``opencode serve`` runs in
its own sandbox, both against the fake LLM gateway over TLS (``tests/fakellm``), which demands
the platform's real ``LITELLM_API_KEY``: only the vault holds it, the sandbox holds the stub.
Conversations go through the REST API (``/message``, ``/message_stream``, ``/events``,
``/messages``, ``/abort``, ``/restart``) and through ``lap`` chat in a pseudo-terminal.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import test_tui_harnesses as tui
from tests.e2e.test_exec_and_recording import run
from tests.fakellm import ANTHROPIC, FakeGateway, Text, ToolCall, Turn
from tests.harness_tools import require_cli
from tests.lapcli.ptyharness import Lap

MODEL = "claude-sonnet-4-5"
BRING_UP = 180  # seconds: a cold sandbox, the tools check, the harness's start
REAL_KEY = tui.REAL_KEY
assert_only_stubs_inside = tui.assert_only_stubs_inside
# The same module fixtures as the terminal harnesses' tests (a platform of this module's own):
# the CA the vault trusts, the fake gateway demanding the real key, the live platform.
ca = tui.ca
gateway = tui.gateway
platform = tui.platform


def sse(platform, method: str, path: str, **kwargs) -> Iterator[dict]:
    """The ``data:`` frames of a Server-Sent Events response, as they arrive."""
    timeout = httpx.Timeout(30, read=180)
    with platform.client.stream(
        method, f"/api/v1/managed_agents{path}", timeout=timeout, **kwargs
    ) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"] == "text/event-stream"
        for line in reply.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def until(frames: Iterator[dict], wanted: str) -> list[dict]:
    seen = []
    for frame in frames:
        seen.append(frame)
        if frame["type"] == wanted:
            return seen
    raise AssertionError(f"no {wanted} frame in {seen}")


def texts(message: dict) -> list[str]:
    return [part["text"] for part in message["parts"] if part["type"] == "text"]


def messages(platform, session_id: str) -> list[dict]:
    reply = platform.api("GET", f"/sessions/{session_id}/messages")
    assert reply.status_code == 200, reply.text
    return reply.json()


def log(platform, session_id: str) -> list[tuple[str, str, str]]:
    return [
        (m["info"]["role"], m["info"]["status"], "".join(texts(m)))
        for m in messages(platform, session_id)
    ]


def wait_for_log(platform, session_id: str, length: int, timeout: float = 120) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        current = log(platform, session_id)
        if len(current) >= length and all(status != "pending" for _, status, _ in current):
            return current
        assert time.monotonic() < deadline, f"the log stayed at {current}"
        time.sleep(0.2)


def scripted_since(gateway: FakeGateway, since: int) -> list:
    return [r for r in gateway.requests[since:] if r.api == ANTHROPIC and r.scripted]


def last_user_text(request) -> str:
    content = request.json["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def send(platform, session_id: str, text: str) -> dict:
    reply = platform.api(
        "POST", f"/sessions/{session_id}/message", json={"text": text}, timeout=180
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


# --- claude-agent-sdk ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_agent(platform):
    require_cli("claude-agent-sdk")
    return platform.create_agent(
        "e2e-sdk",
        harness_id="claude-agent-sdk",
        model=MODEL,
        prompt="Answer in one short sentence.",
        allow_out=["127.0.0.1"],
    )


@pytest.fixture(scope="module")
def sdk_session(platform, gateway, sdk_agent):
    """A session whose ``initial_prompt`` ran as its first turn."""
    gateway.script("Noted: PAPAYA.")
    created = platform.api(
        "POST",
        f"/agents/{sdk_agent['name']}/session",
        json={"initial_prompt": "Remember the word PAPAYA."},
    )
    assert created.status_code == 201, created.text
    session = platform.wait_status(created.json()["id"], timeout=BRING_UP)
    assert session["status"] == "ready", session
    return session


def test_sdk_conversation_resumes_across_message_and_message_stream(platform, gateway, sdk_session):
    session_id = sdk_session["id"]
    assert wait_for_log(platform, session_id, 2) == [
        ("user", "complete", "Remember the word PAPAYA."),
        ("assistant", "complete", "Noted: PAPAYA."),
    ]
    since = len(gateway.requests)
    gateway.script("You asked me to remember PAPAYA.")
    reply = send(platform, session_id, "Which word was it?")
    assert texts(reply) == ["You asked me to remember PAPAYA."]
    (second,) = scripted_since(gateway, since)
    assert "Remember the word PAPAYA." in second.text()  # the SDK session was resumed
    assert "Answer in one short sentence." in json.dumps(second.json["system"])

    gateway.script("Streamed third answer.")
    frames = list(
        sse(platform, "POST", f"/sessions/{session_id}/message_stream", json={"text": "And now?"})
    )
    assert frames[0] == {"type": "ready"}
    assert frames[-1]["type"] == "done"
    assert texts(frames[-1]["message"]) == ["Streamed third answer."]
    kinds = [f["event"]["type"] for f in frames[1:-1]]
    assert "message.part.delta" in kinds and kinds[-1] == "session.idle"
    assert [status for _, status, _ in log(platform, session_id)] == ["complete"] * 6

    assert gateway.credentials() == {REAL_KEY}
    assert_only_stubs_inside(platform, session_id, "ANTHROPIC_API_KEY")
    assert_only_stubs_inside(platform, session_id, "LITELLM_API_KEY")


def test_sdk_tool_use_runs_in_the_sandbox(platform, gateway, sdk_session):
    session_id = sdk_session["id"]
    command = "echo ran-in-$(hostname) > /work/proof.txt; cat /work/proof.txt"
    gateway.script(ToolCall("Bash", {"command": command}), "The tool ran.")
    reply = send(platform, session_id, "Run the command.")
    tool = next(part for part in reply["parts"] if part["type"] == "tool")
    assert (tool["tool"], tool["state"]["status"]) == ("Bash", "completed")
    assert tool["state"]["output"].strip().startswith("ran-in-lap-")
    assert texts(reply)[-1] == "The tool ran."
    status, events = run(platform, session_id, {"argv": ["cat", "/work/proof.txt"]})
    assert status == 200
    assert events[0]["data"] == tool["state"]["output"].strip() + "\n"


def test_sdk_abort_mid_turn_seen_by_a_second_client(platform, gateway, sdk_session):
    session_id = sdk_session["id"]
    hold = threading.Event()
    gateway.script(Turn([Text("Once upon a time, in a land far away")], hold=hold))
    gateway.script("A short one instead.")
    try:
        turn = sse(
            platform,
            "POST",
            f"/sessions/{session_id}/message_stream",
            json={"text": "A long story."},
        )
        first = until(turn, "harness_event")
        while first[-1]["event"]["type"] != "message.part.delta":
            first.append(next(turn))
        busy = platform.api("POST", f"/sessions/{session_id}/message", json={"text": "me too"})
        assert (busy.status_code, busy.json()["code"]) == (409, "turn_in_flight")
        tail = sse(platform, "GET", f"/sessions/{session_id}/events")
        assert next(tail) == {"type": "ready"}
        replayed = [next(tail) for _ in first[1:]]
        assert replayed == first[1:]  # the turn so far, from its start
        aborted = platform.api("POST", f"/sessions/{session_id}/abort")
        assert aborted.json() == {"ok": True, "aborted": True}
        done = until(turn, "done")[-1]
        assert done["message"]["info"]["error"]["name"] == "MessageAbortedError"
        assert until(tail, "done")[-1] == done
    finally:
        hold.set()
    assert log(platform, session_id)[-2:] == [
        ("user", "complete", "A long story."),
        ("assistant", "failed", "".join(texts(done["message"]))),
    ]
    assert texts(send(platform, session_id, "Shorter, please.")) == ["A short one instead."]


def test_sdk_restart_replays_the_conversation_into_a_new_sandbox(platform, gateway, sdk_session):
    session_id = sdk_session["id"]
    before = log(platform, session_id)
    restarted = platform.api("POST", f"/sessions/{session_id}/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["status"] == "creating"
    assert platform.wait_status(session_id, timeout=BRING_UP)["status"] == "ready"
    _, events = run(platform, session_id, {"argv": ["ls", "/work/proof.txt"]})
    assert events[-1]["exit_code"] != 0  # a new sandbox: the old one's files are gone
    since = len(gateway.requests)
    gateway.script("Yes: PAPAYA.")
    assert texts(send(platform, session_id, "Do you still know the word?")) == ["Yes: PAPAYA."]
    (request,) = scripted_since(gateway, since)
    replayed = last_user_text(request)
    assert "<previous_session_history>" in replayed
    assert "Remember the word PAPAYA." in replayed and "Noted: PAPAYA." in replayed
    assert replayed.endswith("Do you still know the word?")
    assert log(platform, session_id)[: len(before)] == before  # the log is kept


def test_lap_chat_converses_with_the_sdk_in_a_terminal(
    platform, gateway, sdk_agent, tmp_path: Path
):
    since = len(gateway.requests)
    gateway.script("Hello from the SDK.", "You said hello first.")
    lap = Lap(platform, tmp_path, sdk_agent["name"])
    child = lap.child
    child.expect(r"chat with session (\S+) ", timeout=BRING_UP)
    session_id = child.match.group(1)
    child.expect("you> ")
    child.sendline("hello")
    child.expect("Hello from the SDK.", timeout=120)
    child.expect("you> ")
    child.sendline("what did I say first?")
    child.expect("You said hello first.", timeout=120)
    child.expect("you> ")
    child.sendeof()
    child.expect(f"lap attach {session_id}")
    assert lap.finish() == 0
    second = scripted_since(gateway, since)[-1]
    assert "hello" in second.text()  # the second turn resumed the first
    assert [role for role, _, _ in log(platform, session_id)] == ["user", "assistant"] * 2
    platform.api("DELETE", f"/sessions/{session_id}")


# --- opencode ----------------------------------------------------------------------------------


def test_opencode_turn_through_the_vault(platform, gateway):
    require_cli("opencode")
    agent = platform.create_agent(
        "e2e-opencode", harness_id="opencode", model=MODEL, allow_out=["127.0.0.1"]
    )
    created = platform.api("POST", f"/agents/{agent['name']}/session", json={})
    session = platform.wait_status(created.json()["id"], timeout=BRING_UP)
    assert session["status"] == "ready", session
    since = len(gateway.requests)
    gateway.script("Hello from opencode.")
    frames = list(
        sse(platform, "POST", f"/sessions/{session['id']}/message_stream", json={"text": "Hi!"})
    )
    assert frames[-1]["type"] == "done", frames[-1]
    assert texts(frames[-1]["message"]) == ["Hello from opencode."]
    assert any(f.get("event", {}).get("type") == "message.part.delta" for f in frames)
    (request,) = scripted_since(gateway, since)
    assert request.credential == REAL_KEY
    assert_only_stubs_inside(platform, session["id"], "LITELLM_API_KEY")
    gateway.script("Second from opencode.")
    assert texts(send(platform, session["id"], "Again?")) == ["Second from opencode."]
    assert "Hi!" in scripted_since(gateway, since)[-1].text()
    assert log(platform, session["id"]) == [
        ("user", "complete", "Hi!"),
        ("assistant", "complete", "Hello from opencode."),
        ("user", "complete", "Again?"),
        ("assistant", "complete", "Second from opencode."),
    ]
