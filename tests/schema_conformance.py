"""Every API response a test receives must match the OpenAPI schema (DESIGN.md: "kept accurate").

``check_response`` looks a response up in the schema drf-spectacular generates (once per test
session): the operation (path + method), the status, the media type, and for a JSON body the
body itself, validated with ``jsonschema`` against the documented response schema. Other
bodies (SSE, NDJSON, asciicast, Prometheus text) are not read. The root ``conftest.py`` wraps
Django's test clients with it, so every test that calls the API is checked.

Checked: every path under ``/api/v1/``, and any other path the schema documents (``/healthz``).
A request outside the documented operations may only get a 404 or 405 in the error shape.
OPTIONS and HEAD are DRF's own answers, which drf-spectacular never lists: not checked; nor is
a request Django refuses for its Host header (a 400 before any API view runs).

The schema is read as JSON Schema 2020-12 with two changes: OpenAPI 3.0's ``nullable`` becomes
a ``null`` type, and an object that lists its ``properties`` is closed (drf-spectacular leaves
it open), so a field missing from the schema is caught too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CHECKED_PREFIX = "/api/v1/"
UNCHECKED_METHODS = {"OPTIONS", "HEAD"}
UNDOCUMENTED_STATUSES = {404: "no such endpoint", 405: "method not allowed"}
ERROR_POINTER = "/components/schemas/Error"
SCHEMA_URI = "urn:lap:openapi"

FORMATS = FormatChecker()  # jsonschema checks date-time only with a package we do not install


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


class SchemaMismatch(AssertionError):
    """A response the schema does not describe; fails the test that made the request."""


@dataclass(frozen=True)
class Operation:
    path: str  # the schema's template, e.g. /api/v1/managed_agents/agents/{agent_id}
    method: str
    spec: dict[str, Any]

    def pointer(self, status: int, media_type: str) -> str:
        """JSON pointer to the schema of this response in the OpenAPI document."""
        segments = ["paths", self.path, self.method, "responses", str(status), "content"]
        return "/" + "/".join(_escape(s) for s in [*segments, media_type, "schema"])

    def __str__(self) -> str:
        return f"{self.spec.get('operationId', '?')} ({self.method.upper()} {self.path})"


@dataclass(frozen=True)
class Schema:
    document: dict[str, Any]
    registry: Registry
    templates: list[tuple[re.Pattern[str], str]]  # literal paths before templated ones

    def template(self, path: str) -> str | None:
        return next((t for pattern, t in self.templates if pattern.fullmatch(path)), None)

    def operation(self, path: str, method: str) -> Operation | None:
        template = self.template(path)
        spec = self.document["paths"][template].get(method) if template else None
        return Operation(template, method, spec) if template and spec else None

    def problems(self, body: Any, pointer: str) -> list[str]:
        """Where ``body`` does not match the schema at ``pointer``, the likeliest cause first."""
        validator = Draft202012Validator(
            {"$ref": f"{SCHEMA_URI}#{pointer}"}, registry=self.registry, format_checker=FORMATS
        )
        errors = list(validator.iter_errors(body))
        if not errors:
            return []
        first = best_match(errors)
        ordered = [first, *(e for e in errors if e is not first)]
        return [f"at {e.json_path}: {e.message}" for e in ordered]


@cache
def openapi_schema() -> Schema:
    """The schema drf-spectacular serves, as JSON Schema; generated on first use (slow)."""
    document = _as_json_schema(SchemaGenerator().get_schema(request=None, public=True))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    ordered = sorted(document["paths"], key=lambda t: (t.count("{"), t))
    templates = [(re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t))), t) for t in ordered]
    return Schema(document, Registry().with_resource(SCHEMA_URI, resource), templates)


def _as_json_schema(node: Any) -> Any:
    """A copy of ``node`` with ``nullable`` spelled in JSON Schema and listed properties closed."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_json_schema(value) for key, value in node.items()}
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)
    if node.pop("nullable", None) is True:
        if isinstance(node.get("type"), str) and "enum" not in node:
            node["type"] = [node["type"], "null"]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


def _escape(segment: str) -> str:
    """``segment`` as one JSON-pointer token (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


def _media_type(response: HttpResponseBase) -> str:
    return response.get("Content-Type", "").split(";")[0].strip()


def check_response(request: HttpRequest, response: HttpResponseBase) -> None:
    """Raise ``SchemaMismatch`` unless the schema documents ``response`` to ``request``."""
    path, method, status = request.path_info, request.method or "GET", response.status_code
    if method in UNCHECKED_METHODS or not _host_allowed(request):
        return
    schema = openapi_schema()
    if not path.startswith(CHECKED_PREFIX) and schema.template(path) is None:
        return
    where = f"{method} {path} -> {status}"
    operation = schema.operation(path, method.lower())
    if operation is None:
        if status not in UNDOCUMENTED_STATUSES:
            raise SchemaMismatch(f"{where}: no operation in the schema for this path and method")
        _check_body(schema, response, ERROR_POINTER, f"{where} ({UNDOCUMENTED_STATUSES[status]})")
        return
    where = f"{operation}: {path} -> {status}"
    documented = operation.spec.get("responses", {})
    if str(status) not in documented:
        raise SchemaMismatch(
            f"{where}: status {status} is not documented (documented: {', '.join(documented)})"
        )
    content = documented[str(status)].get("content", {})
    media_type = _media_type(response)
    if not content:
        if getattr(response, "streaming", False) or getattr(response, "content", b""):
            raise SchemaMismatch(f"{where}: the schema documents no body, got {media_type}")
        return
    if media_type not in content:
        raise SchemaMismatch(
            f"{where}: media type {media_type!r} is not documented (documented: "
            f"{', '.join(content)})"
        )
    _check_body(schema, response, operation.pointer(status, media_type), where)


def _host_allowed(request: HttpRequest) -> bool:
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def _check_body(schema: Schema, response: HttpResponseBase, pointer: str, where: str) -> None:
    """Validate a JSON body against the schema at ``pointer``; other bodies are not read."""
    if _media_type(response) != "application/json" or getattr(response, "streaming", False):
        return
    problems = schema.problems(json.loads(response.content), pointer)
    if problems:
        listed = "\n  ".join(problems)
        raise SchemaMismatch(f"{where}: the body does not match the schema\n  {listed}")
