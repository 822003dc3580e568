"""Warm-pool REST API: thin views over ``pool.services``."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lapsite.schema import errors
from pool import services


class PoolHarnessSerializer(serializers.Serializer):
    target = serializers.IntegerField(help_text="warm sandboxes to keep for this harness")
    warm = serializers.IntegerField(help_text="booted, unclaimed, ready to claim")
    provisioning = serializers.IntegerField(help_text="being booted")
    claimed = serializers.IntegerField(help_text="claimed by a session and still running")


class PoolSerializer(serializers.Serializer):
    max = serializers.IntegerField(
        help_text="cap on warm + provisioning sandboxes over all harnesses (LAP_POOL_MAX)"
    )
    harnesses = serializers.DictField(child=PoolHarnessSerializer(), help_text="per harness id")


class PoolTargetsSerializer(serializers.Serializer):
    targets = serializers.DictField(
        child=serializers.IntegerField(min_value=0),
        allow_empty=False,
        help_text="harness id → target; harnesses left out keep theirs",
    )

    def validate_targets(self, targets: dict[str, int]) -> dict[str, int]:
        problems = services.pool_target_errors(targets)
        if problems:
            # One list of messages per harness, the shape DRF's own checks give.
            raise serializers.ValidationError({h: [m] for h, m in problems.items()})
        return targets


def _pool_body() -> dict:
    return {"max": settings.LAP_POOL_MAX, "harnesses": services.pool_status()}


class PoolApi(APIView):
    """Anyone signed in reads the pool; only staff (the master key included) set its targets,
    which spend the whole platform's capacity."""

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.request.method == "PUT":
            return [permissions.IsAdminUser()]
        return super().get_permissions()

    @extend_schema(
        operation_id="pool_get",
        responses={200: PoolSerializer, **errors(401)},
        description="Warm-pool targets and counts per harness, and the global cap.",
    )
    def get(self, request: Request) -> Response:
        return Response(PoolSerializer(_pool_body()).data)

    @extend_schema(
        operation_id="pool_set",
        request=PoolTargetsSerializer,
        responses={200: PoolSerializer, **errors(400, 401, 403)},
        description="Set warm-pool targets per harness; the pool is topped up at once.",
    )
    def put(self, request: Request) -> Response:
        body = PoolTargetsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.pool_targets_set(body.validated_data["targets"])
        return Response(PoolSerializer(_pool_body()).data)
