"""Vault REST API: a session's credentials (names, stubs, hosts), interceptions, security events.

Thin views over ``vault.services``; no response ever carries a secret value, and interception
records carry credential names only.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lapsite.api import MAX_OFFSET
from lapsite.schema import errors
from sandboxes.api import SESSION_ID
from sandboxes.services import session_get
from vault import services
from vault.models import InterceptionRecord, SecurityEvent, VaultKey


class VaultKeySerializer(serializers.ModelSerializer):
    allowed_hosts = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = VaultKey
        fields = ["name", "stub", "source", "allowed_hosts"]


class InterceptionSerializer(serializers.ModelSerializer):
    credentials = serializers.ListField(
        child=serializers.CharField(), help_text="credential names (never values or stubs)"
    )

    class Meta:
        model = InterceptionRecord
        fields = list(InterceptionRecord.REPORTED_FIELDS)


class InterceptionQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)


class InterceptionPageSerializer(serializers.Serializer):
    data = InterceptionSerializer(many=True)
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


class SecurityEventSerializer(serializers.ModelSerializer):
    credentials = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = SecurityEvent
        fields = ["id", "kind", "credentials", "host", "detail", "created_at"]


class SessionVaultKeysApi(APIView):
    @extend_schema(
        operation_id="sessions_vault_keys",
        parameters=[SESSION_ID],
        responses={200: VaultKeySerializer(many=True), **errors(404)},
        description="The session's credentials: names, stubs and allowed hosts, never values.",
    )
    def get(self, request: Request, session_id: str) -> Response:
        keys = services.vault_keys(session_get(session_id, viewer=request.user))
        return Response(VaultKeySerializer(keys, many=True).data)


class SessionInterceptionsApi(APIView):
    @extend_schema(
        operation_id="sessions_interceptions",
        parameters=[SESSION_ID, InterceptionQuerySerializer],
        responses={200: InterceptionPageSerializer, **errors(400, 404)},
        description="Requests the vault handled, oldest first; pulled fresh while the session "
        "is live. Names and hosts only, never a value or a stub.",
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get(session_id, viewer=request.user)
        query = InterceptionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit, offset = query.validated_data["limit"], query.validated_data["offset"]
        records = services.vault_records_for(session, refresh=True)
        page = {
            "data": records[offset : offset + limit],
            "total": records.count(),
            "limit": limit,
            "offset": offset,
        }
        return Response(InterceptionPageSerializer(page).data)


class SessionSecurityEventsApi(APIView):
    @extend_schema(
        operation_id="sessions_security_events",
        parameters=[SESSION_ID],
        responses={200: SecurityEventSerializer(many=True), **errors(404)},
        description="Tripwires raised on the session (a credential sent to a host it is not "
        "allowed for), oldest first. Pulls the vault's records first while the session is live.",
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get(session_id, viewer=request.user)
        services.vault_records_for(session, refresh=True)
        events = services.security_events_for(session)
        return Response(SecurityEventSerializer(events, many=True).data)
