"""A fake LLM gateway (what LiteLLM is to the platform) over real TLS on 127.0.0.1.

One server speaks every API the harnesses use, on one base URL, as LiteLLM does:

| method | path | answer |
|---|---|---|
| POST | ``/v1/messages`` | Anthropic Messages, JSON or SSE (``"stream": true``) |
| POST | ``/v1/messages/count_tokens`` | ``{"input_tokens": N}`` |
| POST | ``/v1/responses`` | OpenAI Responses, JSON or SSE |
| POST | ``/v1/chat/completions`` | OpenAI Chat Completions, JSON or SSE |
| GET | ``/v1/models``, ``/models`` | the model list (OpenAI and Anthropic fields both) |
| GET/HEAD | ``/`` | ``{"ok": true}`` (connectivity probes) |

Every request (any path) is recorded with its headers and body before anything else, so a
test can assert which key arrived. Model endpoints require ``key`` (``Authorization: Bearer``
or ``x-api-key``) and answer 401 in the API's error shape otherwise: a reply reaching the
harness proves the real key reached the gateway. Unknown paths answer 404.

Usage::

    gateway = FakeGateway(key="sk-real-…").start()      # gateway.base_url, gateway.ca_path
    gateway.script(ToolCall("Bash", {"command": "echo hi"}), "All done.")
    ...
    gateway.stop()
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import json
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

from . import anthropic, openai
from .script import Block, Turn, as_turn

DEFAULT_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5-codex", "gpt-5")
ANTHROPIC, RESPONSES, CHAT = "anthropic", "openai-responses", "openai-chat"


@dataclass
class Request:
    """One request as the gateway received it."""

    method: str
    path: str  # without the query string
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    json: Any  # the parsed body, or None
    api: str  # ANTHROPIC, RESPONSES, CHAT, or "" for other paths
    scripted: bool = False  # whether it took a scripted turn

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def credential(self) -> str | None:
        """The key the client presented (bearer token or ``x-api-key``)."""
        bearer = self.header("authorization") or ""
        if bearer.lower().startswith("bearer "):
            return bearer[7:].strip()
        return self.header("x-api-key") or self.header("api-key")

    def text(self) -> str:
        """Everything the model was sent, as one string (for ``in`` assertions)."""
        return self.body.decode("utf-8", "replace")


def offers_tools(request: Request) -> bool:
    """The default ``match``: a main-loop request (it offers the model tools)."""
    return isinstance(request.json, dict) and bool(request.json.get("tools"))


class FakeGateway:
    """The fake gateway; see the module docstring. Thread-safe; ``start`` returns self."""

    def __init__(
        self,
        *,
        key: str,
        ca: trustme.CA | None = None,
        host: str = "127.0.0.1",
        match: Callable[[Request], bool] = offers_tools,
        fallback: Turn | Block | str = "ok",
        models: Iterable[str] = DEFAULT_MODELS,
    ) -> None:
        self.key = key
        self.ca = ca or trustme.CA()
        self.host = host
        self.match = match
        self.fallback = as_turn(fallback)
        self.models = tuple(models)
        self.requests: list[Request] = []
        self._turns: deque[Turn] = deque()
        self._changed = threading.Condition()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._directory = Path(tempfile.mkdtemp(prefix="fakellm-"))
        self.ca_path = self._directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeGateway:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["http/1.1"])
        self.ca.issue_cert(self.host, "localhost", "127.0.0.1").configure_cert(context)
        server = http.server.ThreadingHTTPServer((self.host, 0), _handler(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="fakellm", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(OSError):
            self.ca_path.unlink()
            self._directory.rmdir()

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT`` (no ``/v1``: LITELLM_API_BASE's form)."""
        return f"https://{self.host}:{self.port}"

    # --- the script ------------------------------------------------------------------

    def script(self, *turns: Turn | Block | str) -> None:
        """Queue replies for matching requests, in order (a str is a text turn)."""
        with self._changed:
            self._turns.extend(as_turn(turn) for turn in turns)

    @property
    def pending(self) -> int:
        """Scripted turns not yet taken."""
        with self._changed:
            return len(self._turns)

    def _take(self, request: Request) -> Turn:
        with self._changed:
            if self._turns and self.match(request):
                request.scripted = True
                return self._turns.popleft()
        return self.fallback

    # --- what arrived ----------------------------------------------------------------

    def model_requests(self, api: str | None = None) -> list[Request]:
        with self._changed:
            return [r for r in self.requests if r.api and (api is None or r.api == api)]

    def credentials(self) -> set[str | None]:
        """Every key presented on a model request."""
        return {r.credential for r in self.model_requests()}

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float = 60) -> None:
        """Block until ``predicate(requests)`` holds; TimeoutError (with what arrived) if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.method, r.path, r.scripted) for r in self.requests]
                    raise TimeoutError(f"fake gateway: condition not met; requests: {seen}")
                self._changed.wait(left)

    def _record(self, request: Request) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _authorised(self, request: Request) -> bool:
        presented = request.credential
        return presented is not None and hmac.compare_digest(presented.encode(), self.key.encode())

    def _models(self) -> dict[str, Any]:
        data = [
            {
                "id": name,
                "object": "model",
                "type": "model",
                "display_name": name,
                "created": 1_700_000_000,
                "created_at": "2025-01-01T00:00:00Z",
                "owned_by": "lap-fake",
            }
            for name in self.models
        ]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }


ROUTES = {
    ("POST", "/v1/messages"): ANTHROPIC,
    ("POST", "/v1/responses"): RESPONSES,
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/chat/completions"): CHAT,
    ("POST", "/responses"): RESPONSES,
}


def _handler(gateway: FakeGateway) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = self._read_body()
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            api = ROUTES.get((self.command, parts.path), "")
            request = Request(
                method=self.command,
                path=parts.path,
                query=parts.query,
                headers=list(self.headers.items()),
                body=body,
                json=parsed,
                api=api,
            )
            gateway._record(request)
            try:
                self._answer(request, parts.path)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.close_connection = True

        def _answer(self, request: Request, path: str) -> None:
            if self.command in ("GET", "HEAD") and path in ("/", "/health"):
                return self._json(200, {"ok": True})
            if self.command == "GET" and path in ("/v1/models", "/models"):
                return self._json(200, gateway._models())
            known = request.api or (self.command, path) == ("POST", "/v1/messages/count_tokens")
            if not known:
                return self._json(
                    404, {"error": {"message": f"no route {path}", "type": "not_found"}}
                )
            if not gateway._authorised(request):
                if request.api in ("", ANTHROPIC):
                    return self._json(
                        401, anthropic.error("authentication_error", "invalid x-api-key")
                    )
                return self._json(
                    401, openai.error("Incorrect API key provided", "invalid_api_key")
                )
            body = request.json if isinstance(request.json, dict) else {}
            if not request.api:
                return self._json(200, anthropic.count_tokens(body))
            turn = gateway._take(request)
            if turn.status is not None:
                text = f"scripted failure {turn.status}"
                headers = {}
                if turn.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(turn.retry_after_ms)
                if request.api == ANTHROPIC:
                    error = anthropic.error("api_error", text)
                else:
                    error = openai.error(text, "server_error")
                return self._json(turn.status, error, headers)
            streaming = bool(body.get("stream"))
            if not streaming and turn.hold is not None:
                turn.hold.wait(turn.hold_timeout)
            if request.api == ANTHROPIC:
                if streaming:
                    return self._sse(anthropic.stream(turn, body))
                return self._json(200, anthropic.message(turn, body))
            if request.api == RESPONSES:
                if streaming:
                    return self._sse(openai.response_stream(turn, body))
                return self._json(200, openai.response(turn, body))
            if streaming:
                return self._sse(openai.chat_stream(turn, body))
            return self._json(200, openai.chat(turn, body))

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("request-id", "req_fake")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _sse(self, events: Iterator[tuple[str | None, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id", "req_fake")
            self.end_headers()
            for name, data in events:
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
                self._chunk(frame.encode())
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    return Handler
