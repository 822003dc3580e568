"""Sessions REST API: thin views over ``sandboxes.services``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api import AGENT_ID
from agents.services import agent_get
from lapsite.fields import StrictCharField
from lapsite.schema import errors
from sandboxes import services
from sandboxes.limits import EXEC_ARGV_MAX_BYTES, MESSAGE_MAX_BYTES
from sandboxes.models import Session
from sandboxes.session_io import session_exec, session_recording

SESSION_ID = OpenApiParameter(
    "session_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the session's id"
)


class SessionSerializer(serializers.ModelSerializer):
    agent_id = serializers.UUIDField(read_only=True)
    supports_tui = serializers.BooleanField(read_only=True)
    tty_url = serializers.SerializerMethodField(
        help_text="relative WebSocket path of the terminal while the session is `ready`; "
        "else null, and always null for API harnesses"
    )
    tty_token = serializers.SerializerMethodField(
        help_text="signed, expiring token for the terminal while the session is `ready`; "
        "else null, and always null for API harnesses"
    )
    idle_timeout_ms = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = [
            "id",
            "agent_id",
            "status",
            "phase",
            "phase_detail",
            "failure_reason",
            "supports_tui",
            "tty_url",
            "tty_token",
            "idle_timeout_ms",
            "created_at",
            "last_seen_at",
        ]

    @staticmethod
    def _has_tty(session: Session) -> bool:
        """Only a ready terminal session has a terminal to attach to (as in LAP)."""
        return session.supports_tui and session.status == Session.Status.READY

    def get_tty_url(self, session: Session) -> str | None:
        if not self._has_tty(session):
            return None
        return reverse("sandboxes:session-item", args=[session.id]) + "/tty"

    def get_tty_token(self, session: Session) -> str | None:
        return services.tty_token_mint(session) if self._has_tty(session) else None

    def get_idle_timeout_ms(self, session: Session) -> int:
        return settings.LAP_IDLE_TIMEOUT * 1000


class SessionCreateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    initial_prompt = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        help_text=f"an API harness's first message; at most {MESSAGE_MAX_BYTES} bytes (UTF-8), "
        "else 413",
    )
    env_vars = serializers.DictField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
        help_text="NAME → secret value for this session only; stubbed like agent secrets",
    )


class SessionListQuerySerializer(serializers.Serializer):
    agent_id = serializers.CharField(required=False, help_text="an agent's id or name")
    status = serializers.ChoiceField(choices=Session.Status.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)


class SessionStopSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField(help_text='"deleted" when this call stopped it, else its status')


class AgentSessionApi(APIView):
    @extend_schema(
        operation_id="sessions_create",
        parameters=[AGENT_ID],
        request=SessionCreateSerializer,
        responses={201: SessionSerializer, **errors(400, 404, 409, 413)},
        description=(
            "Returns at once: `ready` when a warm sandbox was claimed, else `creating`; "
            "poll the session until `ready`."
        ),
    )
    def post(self, request: Request, agent_id: str) -> Response:
        agent = agent_get(agent_id, viewer=request.user)
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = services.session_create(agent=agent, user=request.user, **body.validated_data)
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionCollectionApi(APIView):
    @extend_schema(
        operation_id="sessions_list",
        parameters=[SessionListQuerySerializer],
        responses={200: SessionSerializer(many=True), **errors(400)},
        description="A bare array, newest first (as LAP clients expect).",
    )
    def get(self, request: Request) -> Response:
        query = SessionListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        sessions = services.session_list(viewer=request.user, **query.validated_data)
        return Response(SessionSerializer(sessions, many=True).data)


class SessionItemApi(APIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        parameters=[SESSION_ID],
        responses={200: SessionSerializer, **errors(404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        return Response(
            SessionSerializer(services.session_get(session_id, viewer=request.user)).data
        )

    @extend_schema(
        operation_id="sessions_destroy",
        parameters=[SESSION_ID],
        responses={200: SessionStopSerializer, **errors(404)},
        description="Stops the session and destroys its sandbox. Idempotent.",
    )
    def delete(self, request: Request, session_id: str) -> Response:
        session = services.session_get(session_id, viewer=request.user)
        stopped = services.session_stop(session)
        body = {"id": session.id, "status": "deleted" if stopped else session.status}
        return Response(SessionStopSerializer(body).data)


class SessionExecSerializer(serializers.Serializer):
    argv = serializers.ListField(
        child=StrictCharField(max_length=4096, allow_blank=True, trim_whitespace=False),
        min_length=1,
        max_length=256,
        help_text="the program and its arguments (no shell; use `sh -c` for one); at most "
        f"{EXEC_ARGV_MAX_BYTES} bytes (UTF-8) in all, else 413",
    )
    timeout = serializers.FloatField(
        required=False, default=600, min_value=0.1, max_value=3600, help_text="seconds"
    )


class ExecEventSerializer(serializers.Serializer):
    stream = serializers.ChoiceField(choices=["stdout", "stderr"], required=False)
    data = serializers.CharField(required=False)
    exit_code = serializers.IntegerField(required=False, allow_null=True)
    error = serializers.CharField(required=False, help_text="`timeout` when the command was killed")


async def _ndjson(events: Iterator[dict]) -> AsyncIterator[bytes]:
    """Stream a blocking event iterator under ASGI without buffering it whole."""
    read = sync_to_async(next, thread_sensitive=False)
    finished = object()
    try:
        while (event := await read(events, finished)) is not finished:
            yield json.dumps(event).encode() + b"\n"
    finally:
        await sync_to_async(events.close, thread_sensitive=False)()


class NdjsonRenderer(JSONRenderer):
    """Lets clients ask for ``application/x-ndjson``; errors are ``application/json``."""

    media_type = "application/x-ndjson"
    format = "ndjson"


class AsciicastRenderer(JSONRenderer):
    media_type = "application/x-asciicast"
    format = "cast"


class SessionExecApi(APIView):
    renderer_classes = [JSONRenderer, NdjsonRenderer]

    @extend_schema(
        operation_id="sessions_exec",
        parameters=[SESSION_ID],
        request=SessionExecSerializer,
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                ExecEventSerializer,
                description="one JSON event per line: output chunks, then `{exit_code}`",
            ),
            **errors(400, 404, 409, 413, 503),
        },
        description="Runs one command in the sandbox with the harness's (stub) environment.",
    )
    def post(self, request: Request, session_id: str) -> StreamingHttpResponse:
        session = services.session_get(session_id, viewer=request.user)
        body = SessionExecSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        events = session_exec(session, **body.validated_data)
        return StreamingHttpResponse(_ndjson(events), content_type="application/x-ndjson")


class SessionRecordingApi(APIView):
    renderer_classes = [JSONRenderer, AsciicastRenderer]

    @extend_schema(
        operation_id="sessions_recording",
        parameters=[SESSION_ID],
        responses={
            (200, "application/x-asciicast"): OpenApiResponse(
                OpenApiTypes.STR, description="asciicast v2 (`asciinema play` reads it)"
            ),
            **errors(404, 503),
        },
    )
    def get(self, request: Request, session_id: str) -> HttpResponse:
        session = services.session_get(session_id, viewer=request.user)
        response = HttpResponse(session_recording(session), content_type="application/x-asciicast")
        response["Content-Disposition"] = f'attachment; filename="session-{session.id}.cast"'
        return response
