"""The mitmproxy addon of the vault sidecar: egress policy, stub swapping, echo scrubbing.

Hooks, in the order a request meets them:

- ``http_connect``: with a proxy credential set, refuse a CONNECT without it (407) before any
  other check; the tunnel it opens needs no credential on the requests inside it. Refuse
  before the first bundle (503), refuse destinations the egress rules or the resolved
  addresses forbid (403), and remember the tunnel's authority and checked addresses.
- ``server_connect``: resolve (or reuse the CONNECT-time answer), check every address again and
  pin the connection to the checked address with the host name as SNI, so a second DNS answer
  (rebinding) cannot move it. A refusal kills the connection (the client sees 502).
- ``server_connected``: give the connection its host name back, so that mitmproxy, which reuses
  a connection only for a request to the same address, reuses it for the next request.
- ``requestheaders``: outside a tunnel (plain HTTP), require the proxy credential (407) first;
  take the policy snapshot, require ``Host``/``:authority`` to match the tunnel, find the stubs
  in every header (also inside ``Basic``) and in the URL, block the whole request (never
  forwarded) when one is unknown or one secret may not go to this host, else swap. Proxy
  credentials never go upstream. Chunked or large bodies stream through a split-safe
  ``StreamRewriter``; a refused stub found in one cuts the upstream connection before it
  leaves (the headers are gone already, so no 403 is possible: the client sees 502).
- ``request``: swap stubs in buffered bodies of any content type, decoding gzip/deflate/br/zstd,
  and in trailers (HTTP/2 only), which are checked like headers; a refused stub in the trailers
  of a streamed request cuts the upstream connection, as in a streamed body.
- ``responseheaders`` / ``response``: scrub real values back to stubs in headers, bodies and
  trailers; streamed responses (SSE, chunked, large) through a ``StreamRewriter``,
  gzip/deflate/br/zstd ones decoded first (bounded against bombs, ``sidecar.decoding``) and
  forwarded decoded; any other encoding on a streamed response → 502.
- ``websocket_message``: client messages swapped under the current policy, server ones scrubbed;
  a client message with a refused stub is dropped, recorded as blocked (the tripwire, as for a
  request) and its connection closed.

One interception record per request goes to ``Vault.record``. Hook bodies never log a header,
a body or an exception message: those could hold a value.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from mitmproxy import ctx, http
from mitmproxy.connection import Address
from mitmproxy.proxy import server_hooks

from sidecar.control import Vault
from sidecar.decoding import DecodeError, Decoder, decode_body, stream_decoder
from sidecar.resolver import Resolver, system_resolver
from sidecar.rules import IPAddress, Refused, Unresolvable, ip_literal, normalise_host
from sidecar.swap import (
    STUB_PREFIX,
    Policy,
    Scan,
    Secret,
    StreamRewriter,
    scan_header,
    scan_target,
    swap_header,
    swap_target,
)

log = logging.getLogger("lap.sidecar")

BUFFER_LIMIT = 1024 * 1024
NO_BODY_STATUS = frozenset({101, 204, 304})
_STUB_TOKEN = re.compile(rb"lap_stub_[A-Za-z0-9_]*")
PROXY_AUTH_USER = b"lap"
PROXY_AUTH_REALM = "lap-vault"


@dataclass
class _FlowState:
    policy: Policy
    host: str
    path: str
    started: float
    credentials: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    request_stream: StreamRewriter | None = None
    response_stream: StreamRewriter | None = None
    blocked: str | None = None
    recorded: bool = False


def _record_path(target: bytes) -> str:
    """The path of a request target without its query, any stub-like token replaced."""
    path = target.partition(b"?")[0]
    decoded = unquote_to_bytes(path)
    if STUB_PREFIX in decoded:
        path = _STUB_TOKEN.sub(b"[stub]", decoded)
    return path.decode("utf-8", "replace")


def _blocked(status: int, reason: str, credential: str | None = None) -> http.Response:
    body: dict[str, str] = {"error": "vault_blocked", "reason": reason}
    if credential is not None:
        body["credential"] = credential
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Vault-Blocked": reason},
    )


def _unresolvable(host: str) -> http.Response:
    """502 for a CONNECT to a name without an address: a failure, not a block, in words a
    harness shows its user as they are (opencode prints the ``error`` of a failed call)."""
    body = {"error": f"{host} does not resolve to an address", "reason": "name_not_resolved"}
    return http.Response.make(502, json.dumps(body).encode(), {"Content-Type": "application/json"})


def proxy_authorization(secret: bytes) -> bytes:
    """The ``Proxy-Authorization`` value that carries ``secret``."""
    return b"Basic " + base64.b64encode(PROXY_AUTH_USER + b":" + secret)


def _proxy_auth_required() -> http.Response:
    response = _blocked(407, "proxy_auth_required")
    response.headers["Proxy-Authenticate"] = f'Basic realm="{PROXY_AUTH_REALM}"'
    return response


def _abort_upstream(flow: http.HTTPFlow) -> None:
    """Reset ``flow``'s upstream TCP connection now, mid-request.

    mitmproxy cannot kill a flow whose body is streaming (mitmproxy#4711): its HTTP layer
    would still send the end of the body, and the upstream would take a truncated request as
    whole. Aborting the socket under the connection handler guarantees it never completes;
    mitmproxy then sees the server disconnect and fails the flow (the client gets 502).
    """
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
    io = handler.transports.get(flow.server_conn) if handler else None
    if io is None or io.writer is None:
        log.error("streamed request with a refused stub: upstream connection not found")
        return
    io.writer.transport.abort()


def _refusal(secrets: Iterable[Secret], host: str, *, tls: bool) -> tuple[str, list[str]] | None:
    """Why stubs of ``secrets`` may not go to ``host`` on this flow, and whose; None if they may.

    The host comes first: a stub headed for a host it is not bound to is the tripwire
    (``credential_not_allowed_for_host``: a security event, and the end of a session that asks
    for it), whatever the scheme. Stubs for their own host over plain HTTP are
    ``credential_requires_tls``: their values would cross the network in the clear.
    """
    ordered = sorted(secrets, key=lambda secret: secret.name)
    elsewhere = [secret.name for secret in ordered if not secret.allowed_for(host)]
    if elsewhere:
        return "credential_not_allowed_for_host", elsewhere
    if ordered and not tls:
        return "credential_requires_tls", [secret.name for secret in ordered]
    return None


def _authority_matches(authority: str, host: str, port: int, default_port: int) -> bool:
    if authority.startswith("["):
        name, _, rest = authority[1:].partition("]")
        given_port = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        name, _, given_port = authority.partition(":")
    else:
        name, given_port = authority, ""
    try:
        number = int(given_port) if given_port else default_port
    except ValueError:
        return False
    return normalise_host(name) == host and number == port


def _scan_fields(policy: Policy, scan: Scan, fields: http.Headers) -> list[bool]:
    """Add the stubs in every value of ``fields`` to ``scan``; per field, whether it had one."""
    return [scan_header(policy, scan, value) for _, value in fields.fields]


def _swap_fields(policy: Policy, fields: http.Headers, hits: list[bool]) -> None:
    """Swap the stubs in the values of ``fields`` that ``_scan_fields`` found them in."""
    if any(hits):
        fields.fields = tuple(
            (name, swap_header(policy, value) if hit else value)
            for (name, value), hit in zip(fields.fields, hits, strict=True)
        )


def _scrub_fields(policy: Policy, fields: http.Headers) -> None:
    """Replace every real value in the values of ``fields`` by its stub."""
    if policy.has_value(b"\n".join(value for _, value in fields.fields)):
        fields.fields = tuple((name, policy.scrub(value)) for name, value in fields.fields)


def _encoding(message: http.Message) -> str:
    encoding: str = message.headers.get("content-encoding", "")
    return encoding.strip().lower()


def _decoded_stream(
    decode: Decoder, rewrite: StreamRewriter, state: _FlowState
) -> Callable[[bytes], list[bytes]]:
    """``rewrite`` over the decoded body; after a decoding error nothing more is forwarded."""

    def stream(chunk: bytes) -> list[bytes]:
        if state.blocked:
            return []
        try:
            data = decode(chunk)
        except DecodeError as error:
            log.info("streamed response body not decodable (%s): rest dropped", error)
            state.blocked = "unscannable_encoding"
            return []
        if chunk:
            return rewrite(data) if data else []
        return (rewrite(data) if data else []) + rewrite(b"")

    return stream


def _send_once(body: bytes) -> Callable[[bytes], list[bytes]]:
    """A stream callable that sends ``body`` on its first call and drops every upstream byte."""
    pending = [body]

    def stream(_chunk: bytes) -> list[bytes]:
        sent = pending[:]
        pending.clear()
        return sent

    return stream


class VaultAddon:
    """Enforces the vault policy held by ``vault`` on every flow mitmproxy hands it.

    With ``proxyauth`` (the secret), every CONNECT and every request outside a tunnel must
    carry ``Proxy-Authorization: Basic base64("lap:" + secret)``. A client connection is in
    ``tunnels`` only after its CONNECT passed every check, the credential first, so the
    requests inside an open tunnel are authenticated by it.
    """

    def __init__(
        self, vault: Vault, resolver: Resolver = system_resolver, proxyauth: bytes | None = None
    ) -> None:
        self.vault = vault
        self.resolve = resolver
        self.expected_auth = None if proxyauth is None else proxy_authorization(proxyauth)
        self.tunnels: dict[str, tuple[str, int]] = {}
        self.checked: dict[str, tuple[str, list[IPAddress]]] = {}
        self.named: dict[str, Address] = {}

    def _authenticated(self, request: http.Request) -> bool:
        """Whether ``request`` carries the proxy credential (always, when none is set)."""
        if self.expected_auth is None:
            return True
        given = request.headers.get("proxy-authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.expected_auth)

    # -- destinations -------------------------------------------------------------------------

    async def _checked_addresses(self, policy: Policy, host: str, port: int) -> list[IPAddress]:
        policy.egress.check_host(host)
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            addresses = await self.resolve(host, port)
        except OSError as error:
            raise Unresolvable("name does not resolve") from error
        if not addresses:
            raise Unresolvable("name does not resolve")
        for address in addresses:
            policy.egress.check_address(host, address)
        return addresses

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        policy = self.vault.policy
        host = normalise_host(flow.request.host)
        port = flow.request.port
        if not self._authenticated(flow.request):
            flow.response = _proxy_auth_required()
            self._record_blocked(flow, host, "", "proxy_auth_required", 407)
            return
        if policy is None:
            flow.response = _blocked(503, "vault_not_ready")
            self._record_blocked(flow, host, "", "vault_not_ready", 503)
            return
        try:
            addresses = await self._checked_addresses(policy, host, port)
        except Unresolvable:
            flow.response = _unresolvable(host)
            self._record_blocked(flow, host, "", "name_not_resolved", 502)
            return
        except Refused as refused:
            log.info("CONNECT refused: %s", refused)
            flow.response = _blocked(403, "egress_denied")
            self._record_blocked(flow, host, "", "egress_denied", 403)
            return
        flow.request.host = host
        self.tunnels[flow.client_conn.id] = (host, port)
        self.checked[flow.client_conn.id] = (host, addresses)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        policy = self.vault.policy
        if policy is None:
            data.server.error = "vault not ready"
            return
        if data.server.address is None:
            return
        host, port = normalise_host(str(data.server.address[0])), data.server.address[1]
        cached = self.checked.pop(data.client.id, None)
        try:
            if cached is not None and cached[0] == host:
                for address in cached[1]:
                    policy.egress.check_address(host, address)
                addresses = cached[1]
            else:
                addresses = await self._checked_addresses(policy, host, port)
        except Refused as refused:
            log.info("upstream connection refused: %s", refused)
            data.server.error = f"egress_denied: {refused}"
            return
        if data.server.sni is None and ip_literal(host) is None:
            data.server.sni = host
        self.named[data.server.id] = data.server.address
        data.server.address = (str(addresses[0]), port)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The socket is connected to the pinned address now (``peername``); the connection's
        ``address`` goes back to what the request named. mitmproxy reuses a connection only for
        a request whose address equals it, so with the IP left in place every plain-HTTP request
        on a keep-alive client connection opened another upstream connection, and the sixth
        waited forever for mitmproxy's limit of five per address.

        ``Server`` refuses a new ``address`` on an open connection, a guard against an addon
        moving a live connection elsewhere; this one goes nowhere (the socket stays where it
        is), so the guard is stepped around.
        """
        named = self.named.pop(data.server.id, None)
        if named is not None:
            object.__setattr__(data.server, "address", named)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.named.pop(data.server.id, None)

    def client_disconnected(self, client: object) -> None:
        client_id = getattr(client, "id", None)
        self.tunnels.pop(client_id, None)  # type: ignore[arg-type]
        self.checked.pop(client_id, None)  # type: ignore[arg-type]

    # -- requests ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        started = time.monotonic()
        policy = self.vault.policy
        request = flow.request
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is not None:
            host, port = tunnel
        else:
            host, port = normalise_host(request.host), request.port
        path = _record_path(request.data.path)
        if tunnel is None and not self._authenticated(request):
            flow.response = _proxy_auth_required()
            self._record_blocked(flow, host, path, "proxy_auth_required", 407)
            return
        if policy is None:
            flow.response = _blocked(503, "vault_not_ready")
            self._record_blocked(flow, host, path, "vault_not_ready", 503)
            return
        state = _FlowState(policy, host, path, started)
        flow.metadata["lap"] = state
        default_port = 443 if request.scheme == "https" else 80
        authority = request.host_header
        if authority is not None and not _authority_matches(authority, host, port, default_port):
            self._block(flow, state, 421, "authority_mismatch")
            return
        if tunnel is None:
            try:
                policy.egress.check_host(host)
            except Refused:
                self._block(flow, state, 403, "egress_denied")
                return
        request.headers.pop("proxy-authorization", None)
        scan = Scan()
        hit_headers = _scan_fields(policy, scan, request.headers)
        hit_target = scan_target(policy, scan, request.data.path)
        if scan and not self._allowed(flow, state, scan, tls=request.scheme == "https"):
            return
        _swap_fields(policy, request.headers, hit_headers)
        if hit_target:
            request.data.path = swap_target(policy, request.data.path)
        self._plan_request_body(flow, state)

    def _allowed(self, flow: http.HTTPFlow, state: _FlowState, scan: Scan, *, tls: bool) -> bool:
        """Block the flow (all or nothing) unless every stub it carries may go to its host."""
        if scan.unknown:
            self._block(flow, state, 403, "unknown_stub")
            return False
        refusal = _refusal(scan.secrets, state.host, tls=tls)
        if refusal is not None:
            reason, names = refusal
            self._block(flow, state, 403, reason, names[0])
            return False
        state.credentials.update(s.name for s in scan.secrets)
        return True

    def _plan_request_body(self, flow: http.HTTPFlow, state: _FlowState) -> None:
        request = flow.request
        policy = state.policy
        length: str | None = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if length is None:
            if not (chunked or request.is_http2 or request.is_http3):
                return  # no body
        elif not length.isdigit() or int(length) <= BUFFER_LIMIT:
            return  # buffered: swapped in ``request`` (or a length mitmproxy refuses)
        if policy.stub_re is None or _encoding(request) not in ("", "identity"):
            request.stream = True
            return
        if length is not None:
            del request.headers["content-length"]
            if not (request.is_http2 or request.is_http3):
                request.headers["transfer-encoding"] = "chunked"
        rewriter = StreamRewriter(
            policy.stub_re,
            policy.longest_stub,
            lambda stub: self._stream_swap(flow, state, policy.by_stub[stub]),
            literals=policy.by_stub,
        )
        state.request_stream = rewriter

        def stream(chunk: bytes) -> list[bytes]:
            parts = rewriter(chunk)
            return [] if state.blocked else parts

        request.stream = stream

    def _stream_swap(self, flow: http.HTTPFlow, state: _FlowState, secret: Secret) -> bytes:
        refusal = _refusal((secret,), state.host, tls=flow.request.scheme == "https")
        if refusal is None:
            state.credentials.add(secret.name)
            return secret.value
        if not state.blocked:
            # The headers are upstream already, so no 403 can be sent: cut the upstream
            # connection before the stub leaves, so the request never completes there.
            state.refused.add(secret.name)
            state.blocked = refusal[0]
            _abort_upstream(flow)
        return b""

    def request(self, flow: http.HTTPFlow) -> None:
        state: _FlowState | None = flow.metadata.get("lap")
        if state is None or flow.response is not None:
            return
        if flow.request.trailers and not self._swap_trailers(flow, state):
            return
        if flow.request.stream:
            return
        raw = flow.request.raw_content
        if not raw:
            return
        encoding = _encoding(flow.request)
        if encoding in ("", "identity"):
            body = raw
        else:
            try:
                body = decode_body(raw, encoding)
            except DecodeError:
                return  # forwarded as sent: no stub can be swapped in it
        if STUB_PREFIX not in body:
            return
        scan = Scan()
        scan.add(state.policy, body)
        if self._allowed(flow, state, scan, tls=flow.request.scheme == "https"):
            flow.request.content = state.policy.swap(body)

    def _swap_trailers(self, flow: http.HTTPFlow, state: _FlowState) -> bool:
        """Swap the stubs in the request's trailers (HTTP/2) under the rules for headers.

        mitmproxy sends trailers after this hook. A streamed request's headers and body are
        upstream by then, so instead of the 403 ``_allowed`` answered (it could not be sent) its
        refusal cuts the upstream connection, as a refused stub in a streamed body does.
        """
        request = flow.request
        assert request.trailers is not None
        scan = Scan()
        hits = _scan_fields(state.policy, scan, request.trailers)
        if scan and not self._allowed(flow, state, scan, tls=request.scheme == "https"):
            if request.stream:
                flow.response = None
                request.trailers = None
                _abort_upstream(flow)
            return False
        _swap_fields(state.policy, request.trailers, hits)
        return True

    # -- responses -----------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: _FlowState | None = flow.metadata.get("lap")
        response = flow.response
        if state is None or response is None or state.blocked:
            return
        policy = state.policy
        if policy.value_re is None:
            return
        _scrub_fields(policy, response.headers)
        if flow.request.method == "HEAD" or response.status_code in NO_BODY_STATUS:
            return
        length = response.headers.get("content-length")
        event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        if length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT:
            if not event_stream:
                return  # buffered: scrubbed in ``response``
        encoding = _encoding(response)
        decode = None
        if encoding not in ("", "identity"):
            decode = stream_decoder(encoding)
            if decode is None:
                self._block_stream(flow, state)
                return
            del response.headers["content-encoding"]
        if length is not None:
            del response.headers["content-length"]
        if not (response.is_http2 or response.is_http3):
            response.headers["transfer-encoding"] = "chunked"
        state.response_stream = StreamRewriter(
            policy.value_re,
            policy.longest_value,
            policy.scrub,
            may_match=policy.has_value,
            literals=policy.by_value,
        )
        response.stream = (
            state.response_stream
            if decode is None
            else _decoded_stream(decode, state.response_stream, state)
        )

    def _block_stream(self, flow: http.HTTPFlow, state: _FlowState) -> None:
        """Answer 502 ``unscannable_encoding`` instead of a streamed body no scrub can read; the
        upstream body is drained and dropped."""
        self._block(flow, state, 502, "unscannable_encoding")
        assert flow.response is not None
        body = flow.response.raw_content or b""
        flow.response.stream = _send_once(body)

    def response(self, flow: http.HTTPFlow) -> None:
        state: _FlowState | None = flow.metadata.get("lap")
        response = flow.response
        if state is None or response is None:
            return
        if state.recorded:
            return
        if not state.blocked and not response.stream and state.policy.value_re is not None:
            self._scrub_body(state.policy, response)
        if response.trailers:
            _scrub_fields(state.policy, response.trailers)
        self._record(flow, state)

    def _scrub_body(self, policy: Policy, response: http.Response) -> None:
        raw = response.raw_content
        if not raw:
            return
        encoding = _encoding(response)
        if encoding in ("", "identity"):
            if policy.has_value(raw):
                response.content = policy.scrub(raw)
            return
        try:
            body = decode_body(raw, encoding)
        except DecodeError:
            return  # forwarded as sent, as an invalid body would be by any proxy
        if policy.has_value(body):
            response.content = policy.scrub(body)

    def error(self, flow: http.HTTPFlow) -> None:
        state: _FlowState | None = flow.metadata.get("lap")
        if state is not None:
            self._record(flow, state, reason="upstream_error")

    # -- WebSocket -----------------------------------------------------------------------------

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        policy = self.vault.policy
        state: _FlowState | None = flow.metadata.get("lap")
        if policy is None or state is None:
            message.drop()
            _close_client(flow)
            return
        content = message.content
        if not message.from_client:
            if policy.has_value(content):
                message.content = policy.scrub(content)
            return
        if STUB_PREFIX not in content:
            return
        scan = Scan()
        scan.add(policy, content)
        refusal = (
            ("unknown_stub", [])
            if scan.unknown
            else _refusal(scan.secrets, state.host, tls=flow.request.scheme == "https")
        )
        if refusal is not None:
            log.info("WebSocket message with a refused stub: connection closed")
            message.drop()
            reason, refused = refusal
            self._record_blocked(flow, state.host, state.path, reason, None, refused)
            _close_client(flow)
            return
        state.credentials.update(s.name for s in scan.secrets)
        message.content = policy.swap(content)

    # -- records -------------------------------------------------------------------------------

    def _block(
        self,
        flow: http.HTTPFlow,
        state: _FlowState,
        status: int,
        reason: str,
        credential: str | None = None,
    ) -> None:
        flow.response = _blocked(status, reason, credential)
        flow.metadata["lap"] = state
        if credential is not None:
            state.credentials.add(credential)
        state.blocked = reason

    def _record(self, flow: http.HTTPFlow, state: _FlowState, reason: str | None = None) -> None:
        """Append the flow's one record (a WebSocket flow keeps its state for its messages)."""
        if state.recorded:
            return
        state.recorded = True
        request, response = flow.request, flow.response
        reason = state.blocked or reason
        if reason is None and state.refused:
            reason = "credential_not_allowed_for_host"
        bytes_out = (
            state.request_stream.bytes_out
            if state.request_stream
            else len(request.raw_content or b"")
        )
        if response is None:
            bytes_in = 0
        elif state.response_stream is not None:
            bytes_in = state.response_stream.bytes_in
        else:
            bytes_in = len(response.raw_content or b"")
        self.vault.record(
            method=request.method,
            host=state.host,
            path=state.path,
            decision="blocked" if state.blocked else "allowed",
            reason=reason,
            credentials=sorted(state.credentials | state.refused),
            status=response.status_code if response is not None else None,
            bytes_out=bytes_out,
            bytes_in=bytes_in,
            duration_ms=round((time.monotonic() - state.started) * 1000, 3),
        )

    def _record_blocked(
        self,
        flow: http.HTTPFlow,
        host: str,
        path: str,
        reason: str,
        status: int | None,
        credentials: list[str] | None = None,
    ) -> None:
        self.vault.record(
            method=flow.request.method,
            host=host,
            path=path,
            decision="blocked",
            reason=reason,
            credentials=credentials or [],
            status=status,
            bytes_out=0,
            bytes_in=0,
            duration_ms=0.0,
        )


def _close_client(flow: http.HTTPFlow) -> None:
    """Close the client side of a live WebSocket flow; mitmproxy then closes the upstream side.

    ``flow.kill()`` is no use here: mitmproxy's WebSocket layer never looks at it, so the
    connection stayed open with the message silently dropped. mitmproxy has no way for an
    addon to send a close frame either, so the client sees its connection end (1006).
    """
    handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
    if handler is not None:
        handler.close_connection(flow.client_conn)
