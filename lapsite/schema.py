"""OpenAPI pieces shared by every app: the one error shape and common responses."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers

from lapsite.negotiation import FallbackNegotiation


class ErrorSerializer(serializers.Serializer):
    """What every failure looks like (rendered by ``lapsite.api.exception_handler``)."""

    error = serializers.CharField(help_text="a readable message")
    code = serializers.CharField(help_text="a stable slug, e.g. invalid, not_found, conflict")
    fields = serializers.DictField(
        required=False,
        child=serializers.JSONField(),
        help_text="validation only: messages per field",
    )


class FormatParameterNegotiation(FallbackNegotiation):
    """``GET /api/schema/?format=json`` (or ``yaml``), as drf-spectacular documents it.

    The API negotiates by ``Accept`` alone (``URL_FORMAT_OVERRIDE`` is off); the schema view
    takes the query parameter too, since that is how its users ask for JSON.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        chosen = format_suffix or request.query_params.get("format")
        return super().select_renderer(request, renderers, chosen)


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, ``?format=`` honoured, saved as ``lap-openapi.yaml`` (or ``.json``).

    drf-spectacular names the file after the API's title, whose em dash made Django encode the
    whole ``Content-Disposition`` header (RFC 2047), so browsers saved it under a garbled name.
    """

    content_negotiation_class = FormatParameterNegotiation

    def _get_filename(self, request, version) -> str:
        return f"lap-openapi.{self.perform_content_negotiation(request, force=True)[0].format}"


_DESCRIPTIONS = {
    400: "invalid input (field messages in `fields`)",
    401: "missing or wrong credentials",
    403: "not allowed",
    404: "not found",
    409: "conflict with the current state",
    413: "too large (the message names the limit)",
    415: "the body is not JSON (`Content-Type` must be `application/json`)",
    502: "the harness in the sandbox failed",
    503: "a backend is unavailable",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """Error responses for ``@extend_schema(responses=...)``. 401 and 503 are always included:
    every operation needs credentials, and any can find the database away (``lapsite.api``)."""
    return {
        status: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[status])
        for status in sorted({401, 503, *statuses})
    }


def document_body_errors(result, generator, request, public):
    """A drf-spectacular postprocessing hook: every operation that takes a body answers 413
    to one over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` and 415 to one that is not JSON (the only
    parser, ``lapsite.parsers.JSONParser``), whatever the view; documented here once rather
    than in each ``@extend_schema``."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for operations in result["paths"].values():
        for operation in operations.values():
            if "requestBody" in operation:
                for status in (413, 415):
                    operation["responses"].setdefault(
                        str(status), {"description": _DESCRIPTIONS[status], **error}
                    )
    return result


class MasterKeyScheme(OpenApiAuthenticationExtension):
    target_class = "lapsite.auth.MasterKeyAuthentication"
    name = "masterKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "the platform master key"}


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "lapsite.auth.BearerTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "a per-user API token (admin, or `manage.py lap_token`)",
        }
