"""The runner's minimal HTTP/1.1: one request per connection, bounded sizes.

websockets' own HTTP handling refuses request bodies and cannot stream a response, and the
runner needs both (JSON bodies for /start and /exec, a streamed NDJSON answer for /exec). So
the runner reads the request itself and hands a WebSocket upgrade to websockets' Sans-I/O
protocol. Every response carries ``Connection: close``; clients open one connection per call.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from .protocol import MAX_BODY_BYTES

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class HTTPError(Exception):
    """Answer the request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    head: bytes  # the raw request head, for the WebSocket handshake
    body: bytes = field(default=b"")
    streaming: bool = False  # a streamed answer has begun: no error response is possible

    @property
    def is_websocket(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"

    def json_object(self) -> dict[str, object]:
        """The body parsed as a JSON object (an empty body is ``{}``); 400 otherwise."""
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "body must be a JSON object")
        return value


async def read_head(reader: asyncio.StreamReader) -> Request:
    """Read and parse the request line and headers (not the body)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise HTTPError(431, "request head too large") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError from None
        raise HTTPError(400, "incomplete request") from None
    except TimeoutError:
        raise HTTPError(408, "request head not received in time") from None
    try:
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HTTPError(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1") or not target.startswith("/"):
        raise HTTPError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPError(400, "malformed header line")
        headers[name.lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], headers, head)


async def read_body(reader: asyncio.StreamReader, request: Request) -> None:
    """Read the body announced by Content-Length into ``request.body`` (at most 1 MiB)."""
    if "transfer-encoding" in request.headers:
        raise HTTPError(400, "chunked request bodies are not supported; send Content-Length")
    raw = request.headers.get("content-length", "0")
    if not raw.isdigit():
        raise HTTPError(400, "invalid Content-Length")
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise HTTPError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        request.body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
    except asyncio.IncompleteReadError:
        raise HTTPError(400, "incomplete request body") from None
    except TimeoutError:
        raise HTTPError(408, "request body not received in time") from None


def response_head(status: int, content_type: str, *, length: int | None = None) -> bytes:
    """A response head; without ``length`` the body is sent with chunked encoding."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
    ]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    if status == 401:
        lines.append("WWW-Authenticate: Bearer")
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    return response_head(status, content_type, length=len(body)) + body


def json_response(status: int, value: object) -> bytes:
    return response(status, json.dumps(value).encode())


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; ``chunk(b"")`` ends the body."""
    return b"%x\r\n%s\r\n" % (len(data), data)
