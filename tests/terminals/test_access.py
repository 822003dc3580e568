from __future__ import annotations

import pytest

from terminals.access import credentials_from_scope, origin_allowed


def scope(headers: dict[str, str], query: str = "") -> dict:
    return {
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "query_string": query.encode(),
    }


def test_bearer_header_wins_over_query_token():
    found = credentials_from_scope(scope({"Authorization": "Bearer from-header"}, "token=from-q"))
    assert found.token == "from-header"


def test_query_token_for_browsers_that_cannot_set_headers():
    assert credentials_from_scope(scope({}, "token=abc%2Bdef")).token == "abc+def"


def test_no_credentials():
    found = credentials_from_scope(scope({"Authorization": "Basic Zm9vOmJhcg=="}))
    assert found.token is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),  # the platform's own pages
        ("http://localhost:9999", True),  # an ALLOWED_HOSTS name
        ("https://evil.example", False),
        ("https://127.0.0.1.evil.example", False),
        (None, False),  # cookies need an Origin
        ("null", False),  # sandboxed iframes and file:// pages
    ],
)
def test_origin_rules(origin, allowed):
    assert origin_allowed(origin) is allowed


def test_trusted_origins_setting(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://lap.example.com"]
    assert origin_allowed("https://lap.example.com")
