"""``/healthz`` (public liveness and dependencies) and ``/metrics`` (Prometheus, staff only)."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from rest_framework import permissions, renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lapsite import metrics  # noqa: F401  (registers the collectors)
from lapsite.schema import errors
from sandboxes.services import driver_check


class HealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checks = serializers.DictField(
        child=serializers.CharField(), help_text='"ok" or why the check failed, per dependency'
    )


def _database_check() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return f"{type(error).__name__}: {error}"
    return None


class HealthzView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="healthz",
        auth=[],
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="a dependency failed"),
        },
        description="Whether the database and the sandbox driver answer. Public.",
    )
    def get(self, request: Request) -> Response:
        failures = {"database": _database_check(), "driver": driver_check()}
        ok = not any(failures.values())
        checks = {name: failure or "ok" for name, failure in failures.items()}
        return Response({"ok": ok, "checks": checks}, status=200 if ok else 503)


class PrometheusRenderer(renderers.BaseRenderer):
    """Lets scrapers negotiate ``text/plain``; errors are ``application/json`` regardless
    (``lapsite.api.exception_handler``), so this renders nothing in practice."""

    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return renderers.JSONRenderer().render(data)


class MetricsView(APIView):
    permission_classes = [permissions.IsAdminUser]
    renderer_classes = [renderers.JSONRenderer, PrometheusRenderer]

    @extend_schema(
        operation_id="metrics",
        responses={(200, "text/plain"): OpenApiTypes.STR, **errors(403)},
        description="Prometheus text format. Needs the master key or a staff user's credentials.",
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


metrics_view = MetricsView.as_view()
