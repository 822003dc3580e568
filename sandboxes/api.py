"""Sessions REST API: thin views over ``sandboxes.services``."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api import AGENT_ID
from agents.services import agent_get
from lapsite.schema import errors
from sandboxes import services
from sandboxes.models import Session

SESSION_ID = OpenApiParameter(
    "session_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the session's id"
)


class SessionSerializer(serializers.ModelSerializer):
    agent_id = serializers.UUIDField(read_only=True)
    supports_tui = serializers.BooleanField(read_only=True)
    tty_url = serializers.SerializerMethodField(
        help_text="relative WebSocket path of the terminal; null for API harnesses"
    )
    tty_token = serializers.SerializerMethodField(
        help_text="signed, expiring token for the terminal; null for API harnesses"
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

    def get_tty_url(self, session: Session) -> str | None:
        if not session.supports_tui:
            return None
        return reverse("sandboxes:session-item", args=[session.id]) + "/tty"

    def get_tty_token(self, session: Session) -> str | None:
        return services.tty_token_mint(session) if session.supports_tui else None

    def get_idle_timeout_ms(self, session: Session) -> int:
        return settings.LAP_IDLE_TIMEOUT * 1000


class SessionCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    initial_prompt = serializers.CharField(required=False, allow_blank=True, default="")
    env_vars = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
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
        responses={201: SessionSerializer, **errors(400, 404, 409)},
        description="Returns at once with status `creating`; poll the session until `ready`.",
    )
    def post(self, request: Request, agent_id: str) -> Response:
        agent = agent_get(agent_id)
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
        sessions = services.session_list(**query.validated_data)
        return Response(SessionSerializer(sessions, many=True).data)


class SessionItemApi(APIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        parameters=[SESSION_ID],
        responses={200: SessionSerializer, **errors(404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        return Response(SessionSerializer(services.session_get(session_id)).data)

    @extend_schema(
        operation_id="sessions_destroy",
        parameters=[SESSION_ID],
        responses={200: SessionStopSerializer, **errors(404)},
        description="Stops the session and destroys its sandbox. Idempotent.",
    )
    def delete(self, request: Request, session_id: str) -> Response:
        session = services.session_get(session_id)
        stopped = services.session_stop(session)
        body = {"id": session.id, "status": "deleted" if stopped else session.status}
        return Response(SessionStopSerializer(body).data)
