"""Conversation REST API for API-harness sessions: thin views over ``sandboxes.conversation``.

``/message`` (blocking), ``/message_stream`` and ``/events`` (Server-Sent Events),
``/messages`` (the durable log), ``/abort``, ``/restart``. The streams are async iterators
served by daphne as they are produced; they hold no database connection while they wait.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lapsite.fields import StrictCharField
from lapsite.schema import errors
from sandboxes import conversation, services
from sandboxes.api import SESSION_ID, SessionSerializer
from sandboxes.limits import MESSAGE_MAX_BYTES, MESSAGE_MAX_PARTS

KEEPALIVE = 15.0  # seconds of silence before an SSE comment line, so idle streams stay open


class TextPartSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["text"])
    text = StrictCharField(trim_whitespace=False, max_length=200_000)


class MessageSendSerializer(serializers.Serializer):
    text = StrictCharField(
        required=False,
        trim_whitespace=False,
        max_length=200_000,
        help_text=f"the message; a message (`text` or all its `parts`) has at most "
        f"{MESSAGE_MAX_BYTES} bytes of text (UTF-8), else 413",
    )
    parts = TextPartSerializer(
        many=True,
        required=False,
        max_length=MESSAGE_MAX_PARTS,
        help_text="the message as parts (instead of `text`)",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("text" in data) == ("parts" in data):
            raise serializers.ValidationError("send either `text` or `parts`")
        parts = data["parts"] if "parts" in data else [{"type": "text", "text": data["text"]}]
        if not parts or not any(part["text"].strip() for part in parts):
            raise serializers.ValidationError("the message is empty")
        return {"parts": [dict(part) for part in parts]}


class MessageSerializer(serializers.Serializer):
    """One message: the harness's ``{info, parts}`` shape (opencode's)."""

    info = serializers.DictField(
        help_text="`role`, `time` {created, completed} (ms), and for an assistant turn the "
        "harness's `id`, `sessionID`, `tokens`, `cost`, and `error` {name, data} when it "
        "failed or was aborted (`MessageAbortedError`); in the log also `status` "
        "(pending|complete|failed) and `seq`"
    )
    parts = serializers.ListField(
        child=serializers.DictField(),
        help_text="`text` {text}, `reasoning` {text}, `tool` {tool, callID, state: {status: "
        "running|completed|error, input, output?, error?}}; opencode adds step-start/finish",
    )


class ServerSentEventSerializer(serializers.Serializer):
    """One Server-Sent Event as a client parses it: the schema of a `text/event-stream` response
    describes each event (OpenAPI 3.2's `itemSchema`, which 3.0 tools read from `schema`), and
    an event's `data` is a string, here one JSON frame."""

    event = serializers.CharField(required=False, help_text='never sent: the default, "message"')
    data = serializers.CharField(
        help_text="one frame as JSON: `{type: ready|harness_event|done|error, event?, message?}`; "
        "harness_event carries `event` `{type, properties}` (message.updated, "
        "message.part.updated, message.part.delta, session.idle, …); done carries `message`, "
        "the assistant turn {info, parts}; error carries `message`, why (a string), and "
        "`code` `too_large` when the sandbox refused the message's size"
    )


class AbortSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    aborted = serializers.BooleanField(help_text="false when no turn was in flight")


class EventsQuerySerializer(serializers.Serializer):
    follow = serializers.BooleanField(
        default=False, help_text="stay open across turns instead of ending after one"
    )


class EventStreamRenderer(JSONRenderer):
    """Lets clients ask for ``text/event-stream``; the streams bypass it, and errors are
    ``application/json`` (``lapsite.api.exception_handler``)."""

    media_type = "text/event-stream"
    format = "sse"


async def _sse(frames: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Frames as Server-Sent Events, with a comment line whenever nothing came for a while.

    The frames are read by a task of their own, so waiting for the keepalive never cancels
    the source; the request's database connection is given back before anything is sent.
    """
    await sync_to_async(conversation.release_connections)()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for frame in frames:
                await queue.put(frame)
        finally:
            await queue.put(None)

    reader = asyncio.create_task(pump())
    try:
        while True:
            try:
                frame = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if frame is None:
                break
            yield f"data: {json.dumps(frame)}\n\n".encode()
        await reader
    finally:
        reader.cancel()


def _event_stream(frames: AsyncIterator[dict[str, Any]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_sse(frames), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer the stream
    return response


SSE_RESPONSE = OpenApiResponse(
    ServerSentEventSerializer,
    description="Server-Sent Events; each `data:` line is one frame: `ready`, `harness_event` "
    "frames as the harness works, then `done` (with the assistant turn) or `error`",
)


def _turn_begin(request: Request, session_id: str) -> conversation.Turn:
    """The turn of the message in ``request``'s body (validated), begun on the session."""
    session = services.session_get(session_id, viewer=request.user)
    body = MessageSendSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return conversation.turn_begin(session, body.validated_data["parts"])


class SessionMessageApi(APIView):
    @extend_schema(
        operation_id="sessions_message",
        parameters=[SESSION_ID],
        request=MessageSendSerializer,
        responses={200: MessageSerializer, **errors(400, 404, 409, 413, 502, 503)},
        description=(
            "Sends one message to an API harness (claude-agent-sdk, opencode) and answers with "
            "the assistant turn when it ends. 409 `tui_session` for a terminal harness (attach "
            "to it instead), `not_ready`, or `turn_in_flight` (one turn at a time); 502 when "
            "the harness could not run the turn. An aborted turn is answered, with "
            "`info.error.name` = `MessageAbortedError`."
        ),
    )
    def post(self, request: Request, session_id: str) -> Response:
        return Response(conversation.turn_run(_turn_begin(request, session_id)))


class SessionMessageStreamApi(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="sessions_message_stream",
        parameters=[SESSION_ID],
        request=MessageSendSerializer,
        responses={(200, "text/event-stream"): SSE_RESPONSE, **errors(400, 404, 409, 413)},
        description=(
            "Like `/message`, streamed. The turn runs to its end and is logged even if the "
            "client disconnects (abort it with `/abort`)."
        ),
    )
    def post(self, request: Request, session_id: str) -> StreamingHttpResponse:
        return _event_stream(conversation.turn_frames(_turn_begin(request, session_id)))


class SessionEventsApi(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="sessions_events",
        parameters=[SESSION_ID, EventsQuerySerializer],
        responses={(200, "text/event-stream"): SSE_RESPONSE, **errors(400, 404, 409)},
        description=(
            "Tails the session's turns, whoever sent them: the turn in flight from its start, "
            "else the next one; ends after its `done`/`error` unless `follow`; at most 30 "
            "minutes. When the session is stopped, restarted or deleted meanwhile, the last "
            "frame is an `error` saying so (`the session was stopped`, with the reason if any)."
        ),
    )
    def get(self, request: Request, session_id: str) -> StreamingHttpResponse:
        session = services.session_get(session_id, viewer=request.user)
        query = EventsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        runner_url, token = conversation.events_source(session)
        follow = query.validated_data["follow"]
        events = conversation.session_events(session.id, runner_url, token, follow=follow)
        return _event_stream(events)


class SessionMessagesApi(APIView):
    @extend_schema(
        operation_id="sessions_messages",
        parameters=[SESSION_ID],
        responses={200: MessageSerializer(many=True), **errors(404)},
        description=(
            "The durable conversation log, oldest first: each user message (`pending` while "
            "its turn runs, then `complete`, or `failed` with `info.error`) and each "
            "assistant turn (`complete`, or `failed` when it ended with an error or was "
            "aborted). Kept across restarts and after the session ends."
        ),
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = services.session_get(session_id, viewer=request.user)
        return Response(conversation.conversation_log(session))


class SessionAbortApi(APIView):
    @extend_schema(
        operation_id="sessions_abort",
        parameters=[SESSION_ID],
        request=None,
        responses={200: AbortSerializer, **errors(404, 409, 503)},
        description="Stops the turn in flight; it then ends with `MessageAbortedError`.",
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = services.session_get(session_id, viewer=request.user)
        aborted = conversation.turn_abort(session)
        return Response(AbortSerializer({"ok": True, "aborted": aborted}).data)


class SessionRestartApi(APIView):
    @extend_schema(
        operation_id="sessions_restart",
        parameters=[SESSION_ID],
        request=None,
        responses={200: SessionSerializer, **errors(404, 409)},
        description=(
            "A new sandbox for the session (files and processes of the old one are gone), "
            "returned at once `creating`; poll until `ready`. The conversation is kept: an API "
            "harness gets it before the next message. Also revives a dead or failed session; "
            "409 while it is being brought up."
        ),
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = services.session_restart(services.session_get(session_id, viewer=request.user))
        return Response(SessionSerializer(session).data)
