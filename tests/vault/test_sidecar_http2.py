"""The vault sidecar over HTTP/2: h2 from the client, h2 to the upstream, many streams at once.

mitmproxy mirrors the upstream's ALPN to the client, so against ``H2Upstream`` (h2 only) an
``http2=True`` client speaks h2 to the sidecar and the sidecar speaks h2 upstream. Each test
checks that both hops did: over HTTP/1.1 these tests would prove nothing new.
"""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

import asyncio
import json
import urllib.parse

import httpx
import pytest

from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    VaultEnv,
    h2_server,
    h2_upstream,
    pki,
    session_sidecar,
    upstream,
    vault_env,
)
from tests.vault.sidecar_support import (
    H2Answer,
    H2Upstream,
    basic,
    h2_exchange,
    received_headers,
)


async def _open_connection(env: VaultEnv, client: httpx.AsyncClient, upstream: H2Upstream) -> int:
    """Open the client's h2 connection with one request; return the ``seq`` of its record.

    httpx shares a connection between requests only once it has negotiated HTTP/2: requests
    sent at once on a fresh client would each open a connection of their own.
    """
    response = await client.get(f"{upstream.url}/open")
    assert response.http_version == "HTTP/2"
    assert upstream.received[-1]["alpn"] == "h2"
    return env.sidecar.records()[-1]["seq"]


def _arrived_on_one_connection(upstream: H2Upstream) -> dict[str, dict]:
    """What the upstream received, by path without query, after checking it all came over one
    h2 connection, each request on its own stream."""
    received = upstream.received
    assert {seen["alpn"] for seen in received} == {"h2"}
    assert len({seen["connection"] for seen in received}) == 1
    assert len({seen["stream"] for seen in received}) == len(received)
    return {seen["path"].partition("?")[0]: seen for seen in received}


async def test_concurrent_streams_arrive_swapped_and_echoes_come_back_scrubbed(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    """Four streams open at once on one connection (``X-Hold: 4`` answers none of them before
    all four arrived), each with the stub somewhere else."""
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    url = h2_upstream.url
    hold = {"X-Hold": "4", "X-Echo": f"echo {stub}"}
    async with vault_env.sidecar.async_client(http2=True) as client:
        after = await _open_connection(vault_env, client, h2_upstream)
        responses = await asyncio.gather(
            client.get(f"{url}/header", headers={**hold, "Authorization": f"Bearer {stub}"}),
            client.get(f"{url}/query", params={"token": stub}, headers=hold),
            client.get(f"{url}/basic", headers=hold, auth=("x-access-token", stub)),
            client.post(f"{url}/body", headers=hold, json={"token": stub}),
        )
    for response in responses:
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
        assert response.headers["x-echoed"] == f"echo {stub}"
        assert stub in response.text
        assert value not in response.text
        assert value not in str(response.headers)
    arrived = _arrived_on_one_connection(h2_upstream)
    assert len(arrived) == 5
    assert received_headers(arrived["/header"])["authorization"] == f"Bearer {value}"
    query = urllib.parse.urlsplit(arrived["/query"]["path"]).query
    assert urllib.parse.parse_qs(query) == {"token": [value]}
    assert received_headers(arrived["/basic"])["authorization"] == basic("x-access-token", value)
    assert json.loads(arrived["/body"]["body"]) == {"token": value}
    for seen in arrived.values():
        assert stub not in json.dumps(seen)
    records = vault_env.sidecar.records(after)
    assert sorted(r["path"] for r in records) == ["/basic", "/body", "/header", "/query"]
    for record in records:
        assert (record["decision"], record["reason"], record["status"]) == ("allowed", None, 200)
        assert record["credentials"] == ["GH"]


def test_body_in_data_frames_with_a_stub_split_across_them_arrives_swapped(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    """A generator body goes out as one DATA frame per piece, with no content-length."""
    stub, value = vault_env.stub("GH"), vault_env.value("GH")

    def body():
        yield f"head {stub[:10]}".encode()
        yield stub[10:30].encode()
        yield f"{stub[30:]} tail".encode()

    with vault_env.sidecar.client(http2=True) as client:
        response = client.post(f"{h2_upstream.url}/frames", content=body())
    assert (response.status_code, response.http_version) == (200, "HTTP/2")
    (seen,) = _arrived_on_one_connection(h2_upstream).values()
    assert "content-length" not in received_headers(seen)
    assert seen["body"] == f"head {value} tail"
    assert response.json()["body"] == f"head {stub} tail"


def test_body_larger_than_the_flow_control_windows_is_swapped_and_its_echo_scrubbed(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    """Over 1 MiB both ways, so both bodies stream through the sidecar, and each side has to
    wait for the other's WINDOW_UPDATEs many times over."""
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    payload = f"{stub} {'x' * (2 * 1024 * 1024)} {stub}".encode()
    with vault_env.sidecar.client(http2=True) as client:
        response = client.post(f"{h2_upstream.url}/large", content=payload)
    assert (response.status_code, response.http_version) == (200, "HTTP/2")
    (seen,) = _arrived_on_one_connection(h2_upstream).values()
    assert seen["body"] == payload.decode().replace(stub, value)
    assert response.json()["body"] == payload.decode()


async def test_stream_with_a_stub_for_another_host_is_blocked_while_its_siblings_succeed(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    stub, other = vault_env.stub("GH"), vault_env.stub("OTHER")
    url = h2_upstream.url
    async with vault_env.sidecar.async_client(http2=True) as client:
        after = await _open_connection(vault_env, client, h2_upstream)
        before, blocked, later = await asyncio.gather(
            client.get(f"{url}/before", headers={"X-Hold": "2", "Authorization": stub}),
            client.get(f"{url}/blocked", headers={"Authorization": other}),
            client.get(f"{url}/later", headers={"X-Hold": "2", "Authorization": stub}),
        )
    assert (blocked.status_code, blocked.http_version) == (403, "HTTP/2")
    assert blocked.json() == {
        "error": "vault_blocked",
        "reason": "credential_not_allowed_for_host",
        "credential": "OTHER",
    }
    assert (before.status_code, later.status_code) == (200, 200)
    assert sorted(_arrived_on_one_connection(h2_upstream)) == ["/before", "/later", "/open"]
    assert other not in json.dumps(h2_upstream.received)
    assert vault_env.value("OTHER") not in json.dumps(h2_upstream.received)
    records = {r["path"]: r for r in vault_env.sidecar.records(after)}
    assert sorted(records) == ["/before", "/blocked", "/later"]
    assert (records["/blocked"]["decision"], records["/blocked"]["reason"]) == (
        "blocked",
        "credential_not_allowed_for_host",
    )
    assert records["/blocked"]["credentials"] == ["OTHER"]
    assert records["/before"]["decision"] == records["/later"]["decision"] == "allowed"


async def test_stream_with_an_authority_other_than_the_tunnel_is_refused(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    """``:authority`` names the host the stub would be allowed for, inside a tunnel to another
    host: refused before the stub is looked at, and the connection goes on serving."""
    async with vault_env.sidecar.async_client(http2=True) as client:
        after = await _open_connection(vault_env, client, h2_upstream)
        refused = await client.get(
            f"{h2_upstream.url}/x",
            headers={"Host": "api.example.test", "Authorization": vault_env.stub("OTHER")},
        )
        after_refusal = await client.get(f"{h2_upstream.url}/next")
    assert (refused.status_code, refused.http_version) == (421, "HTTP/2")
    assert refused.json() == {"error": "vault_blocked", "reason": "authority_mismatch"}
    assert after_refusal.status_code == 200
    assert sorted(_arrived_on_one_connection(h2_upstream)) == ["/next", "/open"]
    first, second = vault_env.sidecar.records(after)
    assert (first["path"], first["decision"], first["reason"], first["status"]) == (
        "/x",
        "blocked",
        "authority_mismatch",
        421,
    )
    assert (second["path"], second["decision"]) == ("/next", "allowed")


def test_streamed_body_with_a_stub_for_another_host_never_completes_upstream(
    vault_env: VaultEnv, h2_upstream: H2Upstream
):
    """As over HTTP/1.1: the stream's headers are upstream already, so the upstream connection
    is cut before the stub, and the upstream never sees the stream end."""
    other = vault_env.stub("OTHER")

    def body():
        yield b"x" * 70000
        yield f"head {other[:12]}".encode()
        yield f"{other[12:]} tail".encode()

    with vault_env.sidecar.client(http2=True) as client:
        response = client.post(f"{h2_upstream.url}/upload", content=body())
    assert (response.status_code, response.http_version) == (502, "HTTP/2")
    assert h2_upstream.received == []
    record = vault_env.sidecar.records()[-1]
    assert (record["path"], record["decision"]) == ("/upload", "blocked")
    assert (record["reason"], record["credentials"]) == (
        "credential_not_allowed_for_host",
        ["OTHER"],
    )


def _post(
    env: VaultEnv,
    upstream: H2Upstream,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    trailers: list[tuple[str, str]] | None = None,
) -> H2Answer:
    """POST ``/trailers`` with ``h2`` itself: httpx can neither send nor read trailers."""
    authority = f"localhost:{upstream.port}"
    pseudo = [(":method", "POST"), (":scheme", "https"), (":authority", authority)]
    return h2_exchange(
        env.sidecar, authority, [*pseudo, (":path", "/trailers"), *headers], body, trailers
    )


def test_response_trailers_are_scrubbed(vault_env: VaultEnv, h2_upstream: H2Upstream):
    """gRPC answers in trailers (``grpc-message`` may quote what the request sent)."""
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    answer = _post(vault_env, h2_upstream, [("x-echo-trailer", f"bad token {stub}")])
    assert received_headers(h2_upstream.received[-1])["x-echo-trailer"] == f"bad token {value}"
    assert answer.headers[":status"] == "200"
    assert answer.trailers == {"x-echoed": f"bad token {stub}"}
    assert value not in repr(answer)


# With a content-length the sidecar buffers the body; without one it streams it.
BUFFERED_OR_STREAMED = pytest.mark.parametrize(
    "length", [[("content-length", "5")], []], ids=["buffered", "streamed"]
)


@BUFFERED_OR_STREAMED
def test_request_trailer_stub_arrives_swapped(
    vault_env: VaultEnv, h2_upstream: H2Upstream, length: list
):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    answer = _post(vault_env, h2_upstream, length, b"hello", [("x-token", stub)])
    assert answer.headers[":status"] == "200"
    (seen,) = _arrived_on_one_connection(h2_upstream).values()
    assert seen["trailers"] == [("x-token", value)]
    record = vault_env.sidecar.records()[-1]
    assert (record["decision"], record["credentials"]) == ("allowed", ["GH"])


@BUFFERED_OR_STREAMED
def test_request_trailer_stub_for_another_host_is_refused(
    vault_env: VaultEnv, h2_upstream: H2Upstream, length: list
):
    """Buffered: a 403, nothing forwarded. Streamed: the headers and body are upstream by
    the time the trailers come, so the upstream connection is cut and the request never
    completes there (as for a refused stub in a streamed body)."""
    answer = _post(vault_env, h2_upstream, length, b"hello", [("x-token", vault_env.stub("OTHER"))])
    assert answer.headers[":status"] == ("403" if length else "502")
    assert h2_upstream.received == []
    record = vault_env.sidecar.records()[-1]
    assert (record["path"], record["decision"]) == ("/trailers", "blocked")
    assert (record["reason"], record["credentials"]) == (
        "credential_not_allowed_for_host",
        ["OTHER"],
    )
