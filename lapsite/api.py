"""One error shape for the whole API: ``{"error": message, "code": slug[, "fields": {...}]}``.

``exception_handler`` renders failures inside DRF views; the ``handler*`` views (wired in
``lapsite/urls.py``) do the same for API paths no view answered: an unknown URL, a request
Django refused before any view ran, an unexpected exception.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost, PermissionDenied, RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from lapsite.errors import LapError

logger = logging.getLogger(__name__)

# The largest ``offset`` a paged list accepts: far beyond any real page, and small enough that
# ``offset + limit`` stays inside the databases' 64-bit integers (a larger one was a 503).
MAX_OFFSET = 2**31 - 1


def _first_message(detail: object) -> str:
    """Flatten DRF's nested error detail to one readable line."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
        return "invalid input"
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "invalid input"
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: the error's response, always rendered as JSON."""
    response = _error_response(exc, context)
    if response is not None and context.get("request") is not None:
        _render_as_json(context["request"])
    return response


def _render_as_json(request: Request) -> None:
    """Have DRF render the error as JSON, whatever format the request negotiated.

    Views that stream (``text/event-stream``, NDJSON, asciicast, Prometheus text) list a
    renderer for their format so clients may ask for it; their successes are streamed
    responses that never pass through it, but an error would, labelled with that format.
    DRF renders a response with the request's negotiated renderer (``finalize_response``),
    hence the request is what changes.
    """
    renderer = getattr(request, "accepted_renderer", None)
    if renderer is None or renderer.media_type != JSONRenderer.media_type:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type


def _error_response(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, LapError):
        return Response({"error": exc.message, "code": exc.code}, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(_too_large(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    elif isinstance(exc, DatabaseError):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return Response(
            {"error": "database unavailable", "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django logs the traceback and answers 500
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "error": _first_message(exc.detail),
            "code": "invalid",
            "fields": exc.detail,
        }
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(exc, "default_code", "error")
        response.data = {"error": _first_message(detail), "code": code}
    return response


def _too_large() -> dict[str, str]:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return {"error": f"request body too large (at most {limit} bytes)", "code": "too_large"}


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _quoted(value: str, limit: int = 80) -> str:
    """``value`` as a short repr: control characters escaped, at most ``limit`` characters."""
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def _host_refused(request: HttpRequest) -> str:
    """Why Django refused the request's host, and how to allow it."""
    host = request._get_raw_host()  # what get_host() checked, without raising again
    domain, _port = split_domain_port(host)
    if not domain:
        return f"invalid Host header {_quoted(host)}"
    # DJANGO_ALLOWED_HOSTS feeds settings.ALLOWED_HOSTS (lapsite/settings.py).
    return f"host {_quoted(domain)} is not allowed (add it to the server's DJANGO_ALLOWED_HOSTS)"


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(_too_large(), status=413)
    if isinstance(exception, DisallowedHost):
        return JsonResponse({"error": _host_refused(request), "code": "bad_request"}, status=400)
    return JsonResponse({"error": "bad request", "code": "bad_request"}, status=400)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(
        {"error": f"no API endpoint at {request.path}", "code": "not_found"}, status=404
    )


def handler500(request: HttpRequest) -> HttpResponse:
    if not _is_api(request):
        return defaults.server_error(request)
    return JsonResponse({"error": "internal error", "code": "internal"}, status=500)
