"""Agents REST API: thin views over ``agents.services``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.harnesses import DEFAULT_HARNESS, harness_ids
from agents.models import Agent
from agents.validation import agent_errors
from lapsite.api import MAX_OFFSET
from lapsite.fields import StrictCharField
from lapsite.schema import errors

AGENT_ID = OpenApiParameter(
    "agent_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="the agent's id or name"
)

HostList = serializers.ListField(child=StrictCharField(max_length=253), max_length=200)


class AgentSerializer(serializers.ModelSerializer):
    supports_tui = serializers.BooleanField(read_only=True)
    env_vars = serializers.SerializerMethodField(
        help_text="secret names mapped to a mask; values are never returned"
    )
    env_var_hosts = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField())
    )
    allow_out = serializers.ListField(child=serializers.CharField())
    deny_out = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "model",
            "harness_id",
            "supports_tui",
            "prompt",
            "repo_url",
            "branch",
            "env_vars",
            "env_var_hosts",
            "allow_out",
            "deny_out",
            "stop_on_vault_block",
            "created_at",
        ]

    def get_env_vars(self, agent: Agent) -> dict[str, str]:
        return services.env_vars_masked(agent.env_vars)


class AgentCreateSerializer(serializers.Serializer):
    name = StrictCharField(
        max_length=100,
        required=False,
        help_text="unique; without one, a name is made from the model (claude-sonnet-4-6-3fa9c2)",
    )
    model = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    harness_id = StrictCharField(
        max_length=50,
        required=False,
        default=DEFAULT_HARNESS,
        help_text=f"one of: {', '.join(harness_ids())}",
    )
    prompt = StrictCharField(required=False, allow_blank=True, default="")
    repo_url = StrictCharField(max_length=500, required=False, allow_blank=True, default="")
    branch = StrictCharField(max_length=255, required=False, allow_blank=True, default="main")
    env_vars = serializers.DictField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
        help_text="NAME → secret value; stored encrypted, never returned",
    )
    env_var_hosts = serializers.DictField(child=HostList, required=False, default=dict)
    allow_out = serializers.ListField(
        child=StrictCharField(max_length=253), required=False, default=list
    )
    deny_out = serializers.ListField(
        child=StrictCharField(max_length=253), required=False, default=list
    )
    stop_on_vault_block = serializers.BooleanField(
        required=False,
        default=False,
        help_text="stop a session at its first blocked credential (vault tripwire)",
    )

    def validate(self, attrs: dict) -> dict:
        merged = self.merged(attrs)
        problems = agent_errors(
            name=merged["name"],
            harness_id=merged["harness_id"],
            prompt=merged["prompt"],
            repo_url=merged["repo_url"],
            branch=merged["branch"],
            env_vars=merged["env_vars"],
            env_var_hosts=merged["env_var_hosts"],
            allow_out=merged["allow_out"],
            deny_out=merged["deny_out"],
        )
        if problems:
            raise serializers.ValidationError(problems)
        return attrs

    def merged(self, attrs: dict) -> dict:
        if "name" not in attrs:
            attrs["name"] = services.default_name(attrs["model"])
        return attrs


class AgentUpdateSerializer(AgentCreateSerializer):
    """Every field optional; the result is validated merged with the stored agent."""

    def __init__(self, *args, agent: Agent | None = None, **kwargs) -> None:
        super().__init__(*args, partial=True, **kwargs)
        self.agent = agent

    def merged(self, attrs: dict) -> dict:
        assert self.agent is not None, "validating an update needs the stored agent"
        current = {field: getattr(self.agent, field) for field in services.UPDATABLE}
        current["env_vars"] = services.env_vars_merge(self.agent, attrs.get("env_vars"))
        current["allow_out"] = services.allow_out_after(self.agent, attrs)
        given = {k: v for k, v in attrs.items() if k not in ("env_vars", "allow_out")}
        return {**current, **given}


class AgentListItemSerializer(AgentSerializer):
    session_count = serializers.IntegerField(read_only=True)
    has_active_session = serializers.BooleanField(
        read_only=True, help_text="a session of the agent is creating or ready"
    )

    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "session_count", "has_active_session"]


class AgentListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)
    search = serializers.CharField(required=False, allow_blank=True, default="")
    sort = serializers.ChoiceField(choices=list(services.SORTS), default="created_at")
    order = serializers.ChoiceField(choices=["asc", "desc"], default="desc")


class AgentPageSerializer(serializers.Serializer):
    data = AgentListItemSerializer(many=True)
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


class AgentCollectionApi(APIView):
    @extend_schema(
        operation_id="agents_list",
        parameters=[AgentListQuerySerializer],
        responses={200: AgentPageSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        query = AgentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        agents, total = services.agent_list(viewer=request.user, **query.validated_data)
        page = {"data": agents, "total": total, **query.validated_data}
        return Response(AgentPageSerializer(page).data)

    @extend_schema(
        operation_id="agents_create",
        request=AgentCreateSerializer,
        responses={201: AgentSerializer, **errors(400, 409)},
    )
    def post(self, request: Request) -> Response:
        body = AgentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agent = services.agent_create(user=request.user, **body.validated_data)
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)


class AgentItemApi(APIView):
    @extend_schema(
        operation_id="agents_retrieve",
        parameters=[AGENT_ID],
        responses={200: AgentSerializer, **errors(404)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        return Response(AgentSerializer(services.agent_get(agent_id, viewer=request.user)).data)

    @extend_schema(
        operation_id="agents_update",
        parameters=[AGENT_ID],
        request=AgentUpdateSerializer,
        responses={200: AgentSerializer, **errors(400, 404, 409)},
    )
    def patch(self, request: Request, agent_id: str) -> Response:
        agent = services.agent_get(agent_id, viewer=request.user)
        body = AgentUpdateSerializer(data=request.data, agent=agent)
        body.is_valid(raise_exception=True)
        agent = services.agent_update(agent, **body.validated_data)
        return Response(AgentSerializer(agent).data)

    @extend_schema(
        operation_id="agents_destroy",
        parameters=[AGENT_ID],
        responses={204: None, **errors(404)},
        description="Stops the agent's live sessions (destroying their sandboxes), then deletes.",
    )
    def delete(self, request: Request, agent_id: str) -> Response:
        services.agent_delete(services.agent_get(agent_id, viewer=request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)
