"""The relay's head rewrite: our proxy credentials in, the agent's out."""

from __future__ import annotations

from sandboxes.drivers.proxy_relay import rewrite_head

AUTH = b"Basic bGFwOnNlY3JldA=="


def test_connect_gets_our_credentials_and_loses_the_agents():
    head = (
        b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n"
        b"Proxy-Authorization: Basic Zm9v\r\n\r\n"
    )
    assert rewrite_head(head, AUTH) == (
        b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n"
        b"Proxy-Authorization: " + AUTH + b"\r\n\r\n"
    )


def test_plain_http_is_one_request_per_connection():
    head = (
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n"
        b"Proxy-Connection: keep-alive\r\nKeep-Alive: 5\r\n\r\n"
    )
    assert rewrite_head(head, AUTH) == (
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
        b"Proxy-Authorization: " + AUTH + b"\r\n\r\n"
    )
