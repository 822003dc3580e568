"""One error shape for the whole API: ``{"error": message, "code": slug[, "fields": {...}]}``."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions, status
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
    if isinstance(exc, LapError):
        return Response({"error": exc.message, "code": exc.code}, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
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
