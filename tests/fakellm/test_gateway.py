"""The fake LLM gateway itself: the wire formats harnesses parse, auth, the script."""

from __future__ import annotations

import json
import ssl
import threading

import httpx
import pytest

from tests.fakellm import ANTHROPIC, FakeGateway, Text, Thinking, ToolCall, Turn, failure

KEY = "sk-real-gateway-key"


@pytest.fixture
def gateway():
    with FakeGateway(key=KEY) as gateway:
        yield gateway


@pytest.fixture
def client(gateway):
    with httpx.Client(
        base_url=gateway.base_url, verify=ssl.create_default_context(cafile=gateway.ca_path)
    ) as client:
        yield client


def sse(reply: httpx.Response) -> list[tuple[str | None, object]]:
    events, name = [], None
    for line in reply.text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            events.append((name, data if data == "[DONE]" else json.loads(data)))
            name = None
    return events


TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def test_anthropic_stream_is_the_real_event_sequence_and_a_tool_turn_then_text(gateway, client):
    gateway.script(Turn([Thinking("plan"), ToolCall("Bash", {"command": "echo hi"})]), "Done.")
    body = {"model": "claude-x", "messages": [], "tools": TOOLS, "stream": True}
    first = client.post("/v1/messages", json=body, headers={"x-api-key": KEY})
    events = sse(first)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    arguments = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(arguments) == {"command": "echo hi"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    second = client.post(
        "/v1/messages",
        json={**body, "stream": False},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert second["content"] == [{"type": "text", "text": "Done."}]
    assert second["stop_reason"] == "end_turn"
    assert [r.scripted for r in gateway.model_requests(ANTHROPIC)] == [True, True]


def test_requests_without_tools_and_after_the_script_get_the_fallback(gateway, client):
    gateway.script("scripted")
    headers = {"x-api-key": KEY}
    side = client.post("/v1/messages", json={"model": "m", "messages": []}, headers=headers)
    assert side.json()["content"][0]["text"] == "ok"
    assert gateway.pending == 1
    main = {"model": "m", "messages": [], "tools": TOOLS}
    assert client.post("/v1/messages", json=main, headers=headers).json()["content"][0]["text"] == (
        "scripted"
    )
    assert client.post("/v1/messages", json=main, headers=headers).json()["content"][0]["text"] == (
        "ok"
    )


def test_a_wrong_key_is_refused_in_each_apis_shape_and_recorded(gateway, client):
    bad = {"Authorization": "Bearer lap_stub_LITELLM_API_KEY_0123"}
    anthropic = client.post("/v1/messages", json={"messages": []}, headers=bad)
    assert anthropic.status_code == 401 and anthropic.json()["type"] == "error"
    responses = client.post("/v1/responses", json={"input": []}, headers=bad)
    assert responses.status_code == 401
    assert responses.json()["error"]["code"] == "invalid_api_key"
    assert gateway.credentials() == {"lap_stub_LITELLM_API_KEY_0123"}
    assert client.get("/v1/unknown").status_code == 404


def test_a_scripted_failure_answers_its_status_in_each_apis_shape(gateway, client):
    gateway.script(failure(503), failure(529), "after")
    main = {"model": "m", "messages": [], "tools": TOOLS}
    first = client.post("/v1/messages", json=main, headers={"x-api-key": KEY})
    assert first.status_code == 503 and first.json()["error"]["type"] == "api_error"
    chat = {"model": "m", "messages": [], "tools": TOOLS}
    second = client.post("/v1/chat/completions", json=chat, headers={"x-api-key": KEY})
    assert second.status_code == 529 and second.json()["error"]["code"] == "server_error"
    third = client.post("/v1/messages", json=main, headers={"x-api-key": KEY})
    assert third.json()["content"][0]["text"] == "after"


def test_responses_stream_carries_text_and_function_calls(gateway, client):
    gateway.script(Turn([Text("Hello there"), ToolCall("shell", {"command": ["ls"]})]))
    body = {"model": "gpt", "input": [], "tools": [{"type": "function"}], "stream": True}
    events = sse(
        client.post("/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY}"})
    )
    kinds = [data["type"] for _, data in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    text = "".join(d["delta"] for _, d in events if d["type"] == "response.output_text.delta")
    assert text == "Hello there"
    (call,) = [
        d["item"]
        for _, d in events
        if d["type"] == "response.output_item.done" and d["item"]["type"] == "function_call"
    ]
    assert (call["name"], json.loads(call["arguments"])) == ("shell", {"command": ["ls"]})


def test_chat_completions_stream_ends_with_done_and_a_held_turn_waits(gateway, client):
    release = threading.Event()
    gateway.script(Turn([Text("slow answer")], hold=release))
    body = {"model": "m", "messages": [], "tools": [{}], "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    chunks: list[str] = []
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply:
        lines = reply.iter_lines()
        for line in lines:
            if '"content": "slow ans"' in line:
                break
        assert not release.is_set()
        release.set()
        chunks = [line[6:] for line in lines if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    assert json.loads(chunks[-2])["choices"][0]["finish_reason"] == "stop"
