"""Test support for the vault sidecar: CAs, TLS upstreams, a running sidecar, bundle pushes.

- ``Pki``: a trustme CA as the platform root, a per-test intermediate (path length 0) issued
  with ``cryptography``, and a separate trustme CA for the upstream servers.
- ``Upstream``: an aiohttp HTTPS server on 127.0.0.1 in its own thread, with an echo endpoint,
  a streaming upload counter, an SSE endpoint, a chunked content-encoded endpoint and a WebSocket
  echo; it records what it received.
- ``H2Upstream``: an HTTP/2-only HTTPS server (``h2``) in its own thread that echoes every
  request and records it with its connection and stream.
- ``Sidecar``: ``python -m sidecar`` as a subprocess, its stderr kept for the log-leak check.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import itertools
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import brotli
import h2.config
import h2.connection
import h2.events
import httpx
import trustme
from aiohttp import WSMsgType, web
from backports import zstd
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
LOG_DIR_ENV = "LAP_SIDECAR_TEST_LOGS"


def make_stub(name: str) -> str:
    return f"lap_stub_{name}_{secrets.token_hex(16)}"


def make_value(name: str) -> str:
    return f"real-{name.lower()}-{secrets.token_urlsafe(24)}"


@dataclass
class Pki:
    """The platform root (trusted by clients), the sidecar's intermediate and the upstream CA."""

    root: trustme.CA = field(default_factory=trustme.CA)
    upstream: trustme.CA = field(default_factory=trustme.CA)

    def ca_pem(self) -> bytes:
        """Intermediate key + intermediate certificate + root certificate, as ``ca.pem``."""
        root_cert = x509.load_pem_x509_certificate(self.root.cert_pem.bytes())
        root_key = serialization.load_pem_private_key(self.root.private_key_pem.bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lap sandbox test CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(root_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_cert.public_key()),  # type: ignore[arg-type]
                False,
            )
            .sign(root_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem + cert.public_bytes(serialization.Encoding.PEM) + self.root.cert_pem.bytes()


def echo_seen(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    """What an echo endpoint records of a request, and answers as JSON."""
    return {
        "method": method,
        "path": path,
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
    }


def echo_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The response headers of an echo: ``X-Echoed`` carries the request's ``X-Echo``, so a test
    can see how response headers are scrubbed."""
    value = next((v for k, v in headers if k.lower() == "x-echo"), "")
    return {"x-echoed": value} if value else {}


def received_headers(seen: dict[str, Any]) -> dict[str, str]:
    """The headers an upstream recorded for a request, by lower-case name."""
    return {k.lower(): v for k, v in seen["headers"]}


class _TlsServerThread:
    """A TLS server on 127.0.0.1, run by its own event loop in its own thread, with a
    certificate from ``ca``; it records every request it receives in ``received``."""

    def __init__(self, ca: trustme.CA, names: tuple[str, ...] = ("localhost", "127.0.0.1")):
        self.cert = ca.issue_cert(*names)
        self.received: list[dict[str, Any]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


class Upstream(_TlsServerThread):
    """An HTTPS server (aiohttp) that records every request it receives."""

    def __init__(self, ca: trustme.CA, names: tuple[str, ...] = ("localhost", "127.0.0.1")):
        super().__init__(ca, names)
        self.git_password = ""
        self._runner: web.AppRunner | None = None

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/upload", self._upload)
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/encoded", self._encoded)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/repo.git/info/refs", self._git_refs)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _echo(self, request: web.Request) -> web.Response:
        headers = list(request.headers.items())
        seen = echo_seen(request.method, request.path_qs, headers, await request.read())
        seen["raw_path"] = request.raw_path
        self.received.append(seen)
        return web.json_response(seen, headers=echo_headers(headers))

    async def _git_refs(self, request: web.Request) -> web.Response:
        """A git smart-HTTP ref advertisement of an empty repository, behind Basic auth."""
        self.received.append({"method": "GET", "path": request.path_qs, "headers": []})
        expected = basic("x-access-token", self.git_password)
        if request.headers.get("Authorization", "") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})

        def pkt(line: bytes) -> bytes:
            return b"%04x" % (len(line) + 4) + line

        body = (
            pkt(b"# service=git-upload-pack\n")
            + b"0000"
            + pkt(b"0" * 40 + b" capabilities^{}\x00agent=lap-test\n")
            + b"0000"
        )
        return web.Response(body=body, content_type="application/x-git-upload-pack-advertisement")

    async def _upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        tail = b""
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            tail = (tail + chunk)[-4096:]
        seen = {
            "method": request.method,
            "path": request.path_qs,
            "headers": list(request.headers.items()),
            "size": size,
            "sha256": digest.hexdigest(),
            "tail": tail.decode("utf-8", "replace"),
        }
        self.received.append(seen)
        return web.json_response({k: v for k, v in seen.items() if k != "headers"})

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        """Sends each ``event`` (query, repeated) as one SSE event, written in pieces of ``size``
        bytes with a pause between them, so a value inside an event crosses network chunks."""
        self.received.append({"method": "GET", "path": request.path_qs, "headers": []})
        size = int(request.query.get("size", "5"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in request.query.getall("event"):
            raw = f"data: {event}\n\n".encode()
            for start in range(0, len(raw), size):
                await response.write(raw[start : start + size])
                await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def _encoded(self, request: web.Request) -> web.StreamResponse:
        """Sends ``text`` (query) compressed by ``encoding`` (gzip, deflate, raw-deflate, br,
        zstd; any other name: uncompressed), chunked, in pieces of ``size`` bytes, with
        ``Content-Encoding: label`` (default: the encoding's own name)."""
        self.received.append({"method": "GET", "path": request.path_qs, "headers": []})
        encoding = request.query["encoding"]
        size = int(request.query.get("size", "7"))
        text = request.query["text"].encode()
        compressors = {
            "gzip": lambda: zlib.compressobj(wbits=16 + zlib.MAX_WBITS),
            "deflate": lambda: zlib.compressobj(),
            "raw-deflate": lambda: zlib.compressobj(wbits=-zlib.MAX_WBITS),
        }
        if encoding in compressors:
            compressor = compressors[encoding]()
            body = compressor.compress(text) + compressor.flush()
        elif encoding == "br":
            body = brotli.compress(text)
        elif encoding == "zstd":
            body = zstd.compress(text)
        else:
            body = text
        default_label = "deflate" if encoding == "raw-deflate" else encoding
        label = request.query.get("label", default_label)
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain", "Content-Encoding": label}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), size):
            await response.write(body[start : start + size])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.received.append({"method": "GET", "path": request.path_qs, "headers": []})
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.received.append({"ws": message.data})
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                self.received.append({"ws": message.data.decode("utf-8", "replace")})
                await ws.send_bytes(message.data)
        return ws


class H2Upstream(_TlsServerThread):
    """An HTTPS server that speaks only HTTP/2 (ALPN ``h2``) and echoes every request as JSON.

    Each request is recorded (and echoed) like ``Upstream``'s echo, plus its trailers, the ALPN
    protocol its connection negotiated, a number per connection and the stream id, so a test
    can tell which requests shared a connection. A request with ``X-Hold: N`` is answered only
    once N such requests are waiting on its connection: N of them sent one after another would
    never be answered, so their answers prove they travelled as concurrent streams. The answer
    to a request with ``X-Echo-Trailer`` ends with that value in the trailer ``X-Echoed``.
    """

    def __init__(self, ca: trustme.CA, names: tuple[str, ...] = ("localhost", "127.0.0.1")):
        super().__init__(ca, names)
        self.connections: list[_H2Connection] = []
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def _start(self) -> None:
        context = self._tls_context()
        context.set_alpn_protocols(["h2"])
        self._server = await self._loop.create_server(
            lambda: _H2Connection(self, next(self._numbers)), "127.0.0.1", 0, ssl=context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self.connections:
            connection.transport.abort()


class _H2Connection(asyncio.Protocol):
    """One connection to ``H2Upstream``: requests in, echoes out, both within flow control."""

    transport: asyncio.Transport

    def __init__(self, server: H2Upstream, number: int) -> None:
        self.server = server
        self.number = number
        self.alpn: str | None = None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.requests: dict[int, dict[str, Any]] = {}
        self.held: list[tuple[int, dict[str, Any]]] = []
        self.unsent: dict[int, tuple[bytes, list[tuple[str, str]]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        self.server.connections.append(self)
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.remove(self)

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = {
                    "headers": list(event.headers),
                    "body": bytearray(),
                    "trailers": [],
                }
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id]["body"].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self.requests[event.stream_id]["trailers"] = list(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                self._request_complete(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
                self.unsent.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_unsent()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.h2.data_to_send())

    def _request_complete(self, stream_id: int) -> None:
        request = self.requests.pop(stream_id)
        headers = request["headers"]
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        seen = echo_seen(pseudo[":method"], pseudo[":path"], headers, bytes(request["body"]))
        seen.update(
            trailers=request["trailers"], alpn=self.alpn, connection=self.number, stream=stream_id
        )
        self.server.received.append(seen)
        hold = int(dict(headers).get("x-hold", "0"))
        if not hold:
            self._respond(stream_id, seen)
            return
        self.held.append((stream_id, seen))
        if len(self.held) >= hold:
            for held in self.held:
                self._respond(*held)
            self.held.clear()

    def _respond(self, stream_id: int, seen: dict[str, Any]) -> None:
        body = json.dumps(seen).encode()
        headers = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *echo_headers(seen["headers"]).items(),
        ]
        trailer = received_headers(seen).get("x-echo-trailer")
        self.h2.send_headers(stream_id, headers)
        self.unsent[stream_id] = (body, [("x-echoed", trailer)] if trailer else [])
        self._send_unsent()

    def _send_unsent(self) -> None:
        """Send what the peer's flow-control windows allow of every unfinished answer."""
        for stream_id, (data, trailers) in list(self.unsent.items()):
            while data:
                size = min(
                    len(data),
                    self.h2.local_flow_control_window(stream_id),
                    self.h2.max_outbound_frame_size,
                )
                if size == 0:
                    break
                self.h2.send_data(stream_id, data[:size])
                data = data[size:]
            if data:
                self.unsent[stream_id] = (data, trailers)
                continue
            del self.unsent[stream_id]
            if trailers:
                self.h2.send_headers(stream_id, trailers, end_stream=True)
            else:
                self.h2.end_stream(stream_id)


class Sidecar:
    """``python -m sidecar`` in a subprocess with a unix control socket."""

    def __init__(self, workdir: Path, pki: Pki, log_path: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "state"
        self.state.mkdir(exist_ok=True)
        self.key = Fernet.generate_key()
        (self.state / "key.txt").write_bytes(self.key + b"\n")
        (self.state / "ca.pem").write_bytes(pki.ca_pem())
        self.root_pem = workdir / "root.pem"
        pki.root.cert_pem.write_to_path(str(self.root_pem))
        self.upstream_ca = workdir / "upstream-ca.pem"
        pki.upstream.cert_pem.write_to_path(str(self.upstream_ca))
        self.control = workdir / "control.sock"
        self.ready = workdir / "ready"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, *extra: str) -> Sidecar:
        self.control.unlink(missing_ok=True)
        self.ready.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sidecar",
                    "--proxy",
                    "127.0.0.1:0",
                    "--control",
                    f"unix:{self.control}",
                    "--state-dir",
                    str(self.state),
                    "--upstream-ca",
                    str(self.upstream_ca),
                    "--ready-file",
                    str(self.ready),
                    "--verbose",
                    *extra,
                ],
                cwd=REPO,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while not (self.ready.exists() and self.control.exists()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sidecar did not start; see {self.log_path}")
            time.sleep(0.05)
        self.address = self.ready.read_text().strip()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    @property
    def proxy_url(self) -> str:
        return f"http://{self.address}"

    def control_client(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.control)), base_url="http://sidecar"
        )

    def seal(self, bundle: dict[str, Any], key: bytes | None = None) -> bytes:
        return Fernet(key or self.key).encrypt(json.dumps(bundle).encode())

    def push(self, bundle: dict[str, Any], key: bytes | None = None) -> httpx.Response:
        with self.control_client() as client:
            return client.put("/bundle", content=self.seal(bundle, key))

    def records(self, after: int = 0) -> list[dict[str, Any]]:
        from sidecar.control import read_token

        with self.control_client() as client:
            response = client.get(
                f"/interceptions?after={after}",
                headers={"Authorization": f"Bearer {read_token(self.key)}"},
            )
        response.raise_for_status()
        return response.json()["records"]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(proxy=self.proxy_url, verify=self.trust(), timeout=30, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(proxy=self.proxy_url, verify=self.trust(), timeout=30, **kwargs)

    def trust(self) -> ssl.SSLContext:
        """A client TLS context that trusts the certificates the sidecar makes up."""
        return ssl.create_default_context(cafile=str(self.root_pem))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class H2Answer:
    headers: dict[str, str]
    body: bytes
    trailers: dict[str, str]


def h2_exchange(
    sidecar: Sidecar,
    authority: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    trailers: list[tuple[str, str]] | None = None,
) -> H2Answer:
    """One HTTP/2 request on stream 1, through a CONNECT tunnel of ``sidecar``, spoken with
    ``h2`` itself: httpx can neither send nor read trailers. ``body`` must fit the initial
    flow-control window."""
    host, port = sidecar.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(4096)
        assert head.split(b" ", 2)[1] == b"200", head
        context = sidecar.trust()
        context.set_alpn_protocols(["h2"])
        with context.wrap_socket(raw, server_hostname=authority.rsplit(":", 1)[0]) as tls:
            assert tls.selected_alpn_protocol() == "h2"
            return _h2_request(tls, headers, body, trailers or [])


def _h2_request(
    tls: ssl.SSLSocket, headers: list[tuple[str, str]], body: bytes, trailers: list[tuple[str, str]]
) -> H2Answer:
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    connection.initiate_connection()
    connection.send_headers(1, headers, end_stream=not (body or trailers))
    if body:
        connection.send_data(1, body, end_stream=not trailers)
    if trailers:
        connection.send_headers(1, trailers, end_stream=True)
    answer = H2Answer({}, b"", {})
    while True:
        tls.sendall(connection.data_to_send())
        data = tls.recv(65536)
        if not data:
            raise ConnectionError("the sidecar closed the connection")
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                answer.headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                answer.body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.TrailersReceived):
                answer.trailers = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                return answer
            elif isinstance(event, h2.events.StreamReset):
                raise ConnectionError(f"stream reset: {event.error_code!r}")
