"""Conversations with API harnesses over the REST API, against the FakeDriver's echoing harness.

The rules: one turn at a time (409), the durable log (user ``pending`` → ``complete`` or
``failed``, the assistant turn after it), the SSE frames of ``/message_stream`` and
``/events``, terminal sessions answering 409 with a hint, abort, restart with the
conversation handed to the new sandbox, and ``initial_prompt`` as the first turn.

Transactional: turns finish on worker threads with connections of their own.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import AsyncClient
from django.utils import timezone

from agents.services import agent_create
from sandboxes import conversation, messages, services
from sandboxes.limits import HISTORY_MAX_BYTES, MESSAGE_MAX_BYTES, MESSAGE_MAX_PARTS
from sandboxes.models import Session, SessionMessage
from sandboxes.reconcile import reconcile
from sandboxes.runner_client import RunnerError

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/v1/managed_agents"


@pytest.fixture
def api_agent(user):
    return agent_create(user=user, name="sdk-agent", harness_id="claude-agent-sdk", model="m")


def bring_up(session: Session) -> Session:
    services.session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == "ready", session.failure_reason
    return session


@pytest.fixture
def api_session(api_agent, user):
    return bring_up(services.session_create(agent=api_agent, user=user))


class MasterKeyAsyncClient(AsyncClient):
    """Django's AsyncClient with the master key on every request (the ASGI scope does not
    take the client-wide ``headers``)."""

    async def generic(self, *args, headers=None, **kwargs):
        headers = {"Authorization": f"Bearer {settings.LAP_MASTER_KEY}", **(headers or {})}
        return await super().generic(*args, headers=headers, **kwargs)


@pytest.fixture
def async_client():
    return MasterKeyAsyncClient()


@pytest.fixture
def held(fake_driver):
    """Turns stop after their first word until the event is set (or they are aborted)."""
    fake_driver.hold_turns = threading.Event()
    yield fake_driver.hold_turns
    fake_driver.hold_turns.set()


def log(session) -> list[tuple[str, str, str]]:
    """(role, status, text) of each message in the log."""
    return [
        (m.role, m.status, "".join(p.get("text", "") for p in m.parts))
        for m in SessionMessage.objects.filter(session=session).order_by("seq")
    ]


@sync_to_async
def alog(session) -> list[tuple[str, str, str]]:
    """``log`` from async tests; the worker thread's connection is closed afterwards (else
    Postgres cannot drop the test database)."""
    try:
        return log(session)
    finally:
        conversation.release_connections()


async def sse_frames(response):
    """The ``data:`` payloads of a streamed response, as they arrive."""
    buffer = b""
    async for chunk in response.streaming_content:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            if block.startswith(b"data: "):
                yield json.loads(block[6:])


async def until(frames, wanted: str) -> list[dict]:
    """Frames up to and including the first of type ``wanted``."""
    seen = []
    async for frame in frames:
        seen.append(frame)
        if frame["type"] == wanted:
            return seen
    raise AssertionError(f"no {wanted} frame in {seen}")


def url(session, action: str) -> str:
    return f"{BASE}/sessions/{session.id}/{action}"


# --- /message and the log ----------------------------------------------------------------


def test_message_returns_the_assistant_turn_and_logs_both(api_client, api_session, fake_driver):
    reply = api_client.post(url(api_session, "message"), {"text": "hello there"}, format="json")
    assert reply.status_code == 200, reply.json()
    body = reply.json()
    assert body["info"]["role"] == "assistant"
    assert [p["text"] for p in body["parts"]] == ["echo: hello there"]
    assert log(api_session) == [
        ("user", "complete", "hello there"),
        ("assistant", "complete", "echo: hello there"),
    ]
    messages = api_client.get(url(api_session, "messages")).json()
    assert [m["info"]["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["info"]["cost"] == 0.01  # the harness's info is kept
    assert messages[1]["info"]["status"] == "complete"
    api_session.refresh_from_db()
    assert api_session.turn_started_at is None
    (sandbox,) = fake_driver.sandboxes.values()
    assert sandbox.conversation.turns == [[{"type": "text", "text": "hello there"}]]


def test_message_takes_parts(api_client, api_session):
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    reply = api_client.post(url(api_session, "message"), {"parts": parts}, format="json")
    assert reply.json()["parts"][0]["text"] == "echo: one two"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "send either `text` or `parts`"),
        ({"text": "a", "parts": [{"type": "text", "text": "b"}]}, "either `text` or `parts`"),
        ({"text": "   "}, "the message is empty"),
        ({"parts": []}, "the message is empty"),
        ({"parts": [{"type": "image", "text": "x"}]}, "parts"),
        ({"parts": "hello"}, "parts"),
        ({"text": 123}, "text: must be a string"),
        ({"parts": [{"type": "text", "text": 4.5}]}, "parts: 0: text: must be a string"),
    ],
)
def test_message_rejects_bad_bodies(api_client, api_session, body, message):
    reply = api_client.post(url(api_session, "message"), body, format="json")
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert log(api_session) == []


def test_a_message_larger_than_the_sandbox_takes_is_413(api_client, api_session, fake_driver):
    parts = [{"type": "text", "text": "x" * 200_000}] * 6  # each part within its limit
    reply = api_client.post(url(api_session, "message"), {"parts": parts}, format="json")
    assert (reply.status_code, reply.json()["code"]) == (413, "too_large")
    assert reply.json()["error"] == (
        f"the message is too large: 1200000 bytes of text (UTF-8), at most {MESSAGE_MAX_BYTES}"
    )
    too_many = [{"type": "text", "text": "x"}] * (MESSAGE_MAX_PARTS + 1)
    reply = api_client.post(url(api_session, "message"), {"parts": too_many}, format="json")
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid")
    assert log(api_session) == []
    (sandbox,) = fake_driver.sandboxes.values()
    assert sandbox.conversation.turns == []


def test_a_message_the_runner_refuses_as_too_large_is_413(api_client, api_session, fake_driver):
    def refuse() -> None:
        raise RunnerError("runner answered 413 to /turn", status=413)

    fake_driver.before("turn", refuse)
    reply = api_client.post(url(api_session, "message"), {"text": "hi"}, format="json")
    assert reply.status_code == 413
    assert reply.json() == {
        "error": "the sandbox refused the message as too large "
        "(its runner takes at most 1048576 bytes a request)",
        "code": "too_large",
    }
    assert log(api_session) == [("user", "failed", "hi")]


def test_a_turn_that_fails_fails_the_user_message_and_frees_the_session(
    api_client, api_session, fake_driver
):
    fake_driver.turn_error = "the Agent SDK worker exited with status 1"
    reply = api_client.post(url(api_session, "message"), {"text": "hi"}, format="json")
    assert reply.status_code == 502
    assert reply.json() == {
        "error": "the Agent SDK worker exited with status 1",
        "code": "harness_failed",
    }
    assert log(api_session) == [("user", "failed", "hi")]
    failed = api_client.get(url(api_session, "messages")).json()[0]
    assert failed["info"]["error"]["data"]["message"] == "the Agent SDK worker exited with status 1"
    fake_driver.turn_error = None
    again = api_client.post(url(api_session, "message"), {"text": "again"}, format="json")
    assert again.status_code == 200


def test_terminal_sessions_answer_409_with_a_hint_to_attach(api_client, ready_session):
    for method, action in [
        ("post", "message"),
        ("post", "message_stream"),
        ("get", "events"),
        ("post", "abort"),
    ]:
        reply = getattr(api_client, method)(
            url(ready_session, action), {"text": "hi"}, format="json"
        )
        assert reply.status_code == 409, action
        body = reply.json()
        assert body["code"] == "tui_session"
        assert f"lap attach {ready_session.id}" in body["error"]
    assert api_client.get(url(ready_session, "messages")).json() == []
    ready_session.status = Session.Status.DEAD
    ready_session.save(update_fields=["status"])
    ended = api_client.post(url(ready_session, "message"), {"text": "hi"}, format="json")
    assert f"after POST /sessions/{ready_session.id}/restart" in ended.json()["error"]


def test_stream_errors_are_json_not_event_streams(api_client, ready_session):
    sse = {"HTTP_ACCEPT": "text/event-stream"}
    terminal = api_client.post(url(ready_session, "message_stream"), {"text": "hi"}, **sse)
    assert (terminal.status_code, terminal["Content-Type"]) == (409, "application/json")
    assert terminal.json()["code"] == "tui_session"
    missing = api_client.get(f"{BASE}/sessions/00000000-0000-0000-0000-000000000000/events", **sse)
    assert (missing.status_code, missing["Content-Type"]) == (404, "application/json")
    assert missing.json()["code"] == "not_found"


def test_a_session_that_is_not_ready_answers_409(api_client, api_agent, user):
    session = services.session_create(agent=api_agent, user=user)  # bring-up not run
    Session.objects.filter(pk=session.pk).update(status="creating", phase="creating_sandbox")
    reply = api_client.post(url(session, "message"), {"text": "hi"}, format="json")
    assert (reply.status_code, reply.json()["code"]) == (409, "not_ready")
    assert log(session) == []


def test_unknown_session_is_404(api_client):
    reply = api_client.post(f"{BASE}/sessions/nope/message", {"text": "hi"}, format="json")
    assert reply.status_code == 404


def test_a_turn_slot_the_runner_no_longer_knows_is_taken_over(api_client, api_session):
    lost = messages.session_message_append(api_session, role="user", parts=[{"text": "lost"}])
    Session.objects.filter(pk=api_session.pk).update(
        turn_started_at=timezone.now() - timedelta(minutes=5)
    )
    reply = api_client.post(url(api_session, "message"), {"text": "new"}, format="json")
    assert reply.status_code == 200
    lost.refresh_from_db()
    assert lost.status == "failed"
    assert log(api_session)[1:] == [
        ("user", "complete", "new"),
        ("assistant", "complete", "echo: new"),
    ]


def test_a_fresh_turn_slot_is_not_taken_over(api_client, api_session):
    Session.objects.filter(pk=api_session.pk).update(turn_started_at=timezone.now())
    reply = api_client.post(url(api_session, "message"), {"text": "new"}, format="json")
    assert (reply.status_code, reply.json()["code"]) == (409, "turn_in_flight")


# --- streams -------------------------------------------------------------------------------


async def test_message_stream_sends_ready_events_then_done(async_client, api_session):
    response = await async_client.post(
        url(api_session, "message_stream"), {"text": "stream me"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    frames = await until(sse_frames(response), "done")
    assert frames[0] == {"type": "ready"}
    events = [f["event"] for f in frames[1:-1]]
    assert {f["type"] for f in frames[1:-1]} == {"harness_event"}
    deltas = "".join(e["properties"]["delta"] for e in events if e["type"] == "message.part.delta")
    assert deltas == "echo: stream me"
    assert frames[-1]["message"]["parts"][0]["text"] == "echo: stream me"
    assert await alog(api_session) == [
        ("user", "complete", "stream me"),
        ("assistant", "complete", "echo: stream me"),
    ]


async def test_one_turn_at_a_time_and_abort_ends_it(async_client, api_session, held):
    response = await async_client.post(
        url(api_session, "message_stream"), {"text": "long story"}, content_type="application/json"
    )
    frames = sse_frames(response)
    await until(frames, "harness_event")
    assert await alog(api_session) == [("user", "pending", "long story")]
    busy = await async_client.post(
        url(api_session, "message"), {"text": "me too"}, content_type="application/json"
    )
    assert (busy.status_code, busy.json()["code"]) == (409, "turn_in_flight")
    aborted = await async_client.post(url(api_session, "abort"))
    assert aborted.json() == {"ok": True, "aborted": True}
    done = (await until(frames, "done"))[-1]
    assert done["message"]["info"]["error"]["name"] == "MessageAbortedError"
    assert await alog(api_session) == [
        ("user", "complete", "long story"),
        ("assistant", "failed", "echo:"),
    ]
    idle = await async_client.post(url(api_session, "abort"))
    assert idle.json() == {"ok": True, "aborted": False}


async def test_events_tail_the_turn_in_flight_from_its_start(async_client, api_session, held):
    response = await async_client.post(
        url(api_session, "message_stream"), {"text": "a b c"}, content_type="application/json"
    )
    sent = await until(sse_frames(response), "harness_event")
    tail = await async_client.get(url(api_session, "events"))
    assert tail["Content-Type"] == "text/event-stream"
    frames = sse_frames(tail)
    assert await anext(frames) == {"type": "ready"}
    assert await anext(frames) == sent[-1]  # the turn's first event, replayed
    held.set()
    rest = await until(frames, "done")
    assert rest[-1]["message"]["parts"][0]["text"] == "echo: a b c"
    assert [frame async for frame in frames] == []  # it ends after the turn


async def test_following_events_ends_saying_the_session_was_stopped(async_client, api_session):
    tail = await async_client.get(url(api_session, "events"), {"follow": "true"})
    frames = sse_frames(tail)
    assert await anext(frames) == {"type": "ready"}
    stopped = await async_client.delete(f"{BASE}/sessions/{api_session.id}")
    assert stopped.json()["status"] == "deleted"
    async with asyncio.timeout(10):
        assert [frame async for frame in frames] == [
            {"type": "error", "message": "the session was stopped"}
        ]


async def test_the_turn_goes_on_when_its_client_leaves(async_client, api_session, held):
    response = await async_client.post(
        url(api_session, "message_stream"), {"text": "bye"}, content_type="application/json"
    )
    frames = sse_frames(response)
    await until(frames, "harness_event")
    await frames.aclose()
    await response.streaming_content.aclose()
    held.set()
    async with asyncio.timeout(10):
        while await alog(api_session) != [
            ("user", "complete", "bye"),
            ("assistant", "complete", "echo: bye"),
        ]:
            await asyncio.sleep(0.05)


async def test_a_sandbox_that_vanishes_mid_turn_fails_the_turn(
    async_client, api_session, held, fake_driver
):
    response = await async_client.post(
        url(api_session, "message_stream"), {"text": "hi"}, content_type="application/json"
    )
    frames = sse_frames(response)
    await until(frames, "harness_event")
    (sandbox_id,) = fake_driver.sandboxes
    fake_driver.vanish(sandbox_id)
    error = (await until(frames, "error"))[-1]
    assert error["message"].startswith("the sandbox is unreachable")
    assert await alog(api_session) == [("user", "failed", "hi")]


# --- restart and the first turn -----------------------------------------------------------


def test_restart_gives_a_new_sandbox_the_conversation(api_client, api_session, fake_driver):
    api_client.post(url(api_session, "message"), {"text": "my name is Ada"}, format="json")
    (old,) = fake_driver.sandboxes
    reply = api_client.post(url(api_session, "restart"))
    assert reply.status_code == 200
    assert reply.json()["id"] == str(api_session.id)
    api_session.refresh_from_db()
    assert api_session.status == "ready"  # the tests' task queue runs the bring-up inline
    assert old in fake_driver.destroyed
    (new,) = fake_driver.sandboxes.values()
    assert new.started["api"] == "claude-agent-sdk"
    assert new.started["history"] == [
        {"role": "user", "parts": [{"type": "text", "text": "my name is Ada"}]},
        {"role": "assistant", "parts": [{"type": "text", "text": "echo: my name is Ada"}]},
    ]
    api_client.post(url(api_session, "message"), {"text": "who am I?"}, format="json")
    assert [m["info"]["role"] for m in api_client.get(url(api_session, "messages")).json()] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_restart_hands_over_only_the_newest_history_the_runner_takes(api_session):
    # Escape characters (terminal colours in a tool's output) take six bytes each as JSON:
    # these 180,000 characters are some 1.08 MB in a /start body, over the runner's 1 MiB.
    for seq in range(3):
        SessionMessage.objects.create(
            session=api_session,
            seq=100 + seq,
            role="assistant",
            status=SessionMessage.Status.COMPLETE,
            parts=[{"type": "text", "text": f"reply {seq} " + "\x1b" * 60_000}],
        )
    history = messages.session_history(api_session)
    assert [entry["parts"][0]["text"][:7] for entry in history] == ["reply 2"]
    body = json.dumps(history, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(body) <= HISTORY_MAX_BYTES


def test_restart_revives_a_dead_session_and_refuses_a_creating_one(
    api_client, api_session, api_agent, user
):
    services.session_stop(api_session)
    assert api_client.post(url(api_session, "restart")).status_code == 200
    api_session.refresh_from_db()
    assert (api_session.status, api_session.failure_reason) == ("ready", "")
    creating = services.session_create(agent=api_agent, user=user)
    Session.objects.filter(pk=creating.pk).update(status="creating", phase="creating_sandbox")
    reply = api_client.post(url(creating, "restart"))
    assert (reply.status_code, reply.json()["code"]) == (409, "not_ready")


def test_restart_fails_the_turn_in_flight(api_client, api_session):
    pending = messages.session_message_append(api_session, role="user", parts=[{"text": "x"}])
    Session.objects.filter(pk=api_session.pk).update(turn_started_at=timezone.now())
    api_client.post(url(api_session, "restart"))
    pending.refresh_from_db()
    assert pending.status == "failed"
    assert pending.info["error"]["data"]["message"] == "the session was restarted"


def test_reconcile_counts_a_restart_from_when_it_began(api_session, settings):
    Session.objects.filter(pk=api_session.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.LAP_CREATING_TIMEOUT + 60),
        status="creating",
        restarted_at=timezone.now(),
    )
    assert reconcile().get("timed_out", 0) == 0


def test_initial_prompt_runs_as_the_first_turn_once_ready(api_client, api_agent, fake_driver):
    created = api_client.post(
        f"{BASE}/agents/{api_agent.name}/session", {"initial_prompt": "start here"}, format="json"
    ).json()
    session = Session.objects.get(pk=created["id"])
    assert session.status == "ready"  # bring-up and the first turn run inline in tests
    assert log(session) == [
        ("user", "complete", "start here"),
        ("assistant", "complete", "echo: start here"),
    ]
    api_client.post(url(session, "restart"))
    assert len(log(session)) == 2  # not run again


def test_initial_prompt_for_a_terminal_harness_is_refused(api_client, agent):
    """Nothing in a terminal session would read it: saying so beats dropping it silently."""
    refused = api_client.post(
        f"{BASE}/agents/{agent.name}/session", {"initial_prompt": "ls"}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "initial_prompt: the shell harness is a terminal, which takes no first message; type it"
        " after attaching, or use an API harness (opencode, claude-agent-sdk)"
    )
    assert not Session.objects.exists()
