"""A small synchronous client for the LAP REST API (``/api/v1/managed_agents``).

It speaks only the documented API (DESIGN.md "REST API"), so it works against any compatible
server. Guarantees:

* every non-2xx answer raises :class:`lapcli.status.ApiError` carrying the server's
  ``{"error": …}`` message; a 2xx answer that is not the expected JSON raises
  :class:`lapcli.status.NotAPlatform`; transport failures surface as ``httpx`` exceptions,
  which :func:`lapcli.status.describe` turns into one line;
* list calls walk every page (``limit``/``offset``), so nothing is silently capped at the first 50;
* streaming calls (``exec``, ``message_stream``) yield parsed frames as they arrive and always
  close the response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpx

from lapcli.status import (
    AgentNotFound,
    ExitStatus,
    LapError,
    NotAPlatform,
    api_error_from_response,
)

API_PREFIX = "/api/v1/managed_agents"
PAGE_SIZE = 200
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

Json = dict[str, Any]


class Client:
    """The platform at ``url`` (scheme and host, optionally a path prefix) as user ``key``."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        verify: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.verify = verify
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            transport=transport,
            verify=verify,
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    # -- agents ---------------------------------------------------------------------------

    def list_agents(self) -> list[Json]:
        """Every agent, across all pages."""
        return self._all_pages("/agents", {})

    def resolve_agent(self, wanted: str) -> Json:
        """The agent whose name or id is exactly ``wanted``. Raises :class:`AgentNotFound`
        with the closest names otherwise."""
        agents = self.list_agents()
        for agent in agents:
            if agent.get("name") == wanted or str(agent.get("id")) == wanted:
                return agent
        raise AgentNotFound(wanted, [str(agent.get("name")) for agent in agents])

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, agent_id: str, title: str = "lap-cli") -> Json:
        """Start a session; the platform answers at once with ``status: "creating"``."""
        return self._object(
            "POST", f"/agents/{path_segment(agent_id)}/session", json={"title": title}
        )

    def get_session(self, session_id: str) -> Json:
        return self._object("GET", _session_path(session_id))

    def list_sessions(self, agent_id: str | None = None) -> list[Json]:
        """Sessions (optionally of one agent), across all pages."""
        return self._all_pages("/sessions", {"agent_id": agent_id} if agent_id else {})

    def delete_session(self, session_id: str) -> Json:
        """Stop a session's sandbox. Idempotent on the server."""
        response = self._request("DELETE", _session_path(session_id))
        return _json_or_empty(response)

    def messages(self, session_id: str) -> list[Json]:
        """The session's conversation log: ``{"info": {"role", "status", …}, "parts"}`` each."""
        response = self._request("GET", _session_path(session_id, "messages"))
        return _items(_decode(response.content, response, (dict, list)), response)

    def abort(self, session_id: str) -> None:
        """Abort the in-flight chat turn of an API-harness session."""
        self._request("POST", _session_path(session_id, "abort"))

    def exec(self, session_id: str, argv: list[str], timeout: float | None) -> Iterator[Json]:
        """Run ``argv`` in the session's sandbox; yields the NDJSON frames
        (``{stream, data}`` …, then ``{exit_code}``) as they arrive."""
        body: Json = {"argv": argv}
        if timeout is not None:
            body["timeout"] = timeout
        with self._stream("POST", _session_path(session_id, "exec"), body) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield _decode(line, response, dict)

    def message_stream(self, session_id: str, text: str) -> Iterator[Json]:
        """Send one chat message; yields the Server-Sent Event payloads of the reply."""
        with self._stream(
            "POST", _session_path(session_id, "message_stream"), {"text": text}
        ) as resp:
            data: list[str] = []
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    yield _parse_event("\n".join(data))
                    data = []
            if data:
                yield _parse_event("\n".join(data))

    def tty_url(self, session: Json) -> str:
        """The WebSocket URL of a session's terminal: its (usually relative) ``tty_url``
        resolved against the platform URL, with http→ws and https→wss."""
        raw: str = session.get("tty_url") or API_PREFIX + _session_path(str(session["id"]), "tty")
        parts = urlsplit(urljoin(self.url + "/", raw))
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))

    # -- plumbing -------------------------------------------------------------------------

    def _all_pages(self, path: str, params: dict[str, str]) -> list[Json]:
        """Every item of a list endpoint: pages of ``{"data": [...], "total": N}`` until
        ``total`` is reached. A page without a ``total`` (or a bare array) is the whole list:
        a server that does not page would otherwise be read again and again."""
        items: list[Json] = []
        while True:
            query = {**params, "limit": PAGE_SIZE, "offset": len(items)}
            response = self._request("GET", path, params=query)
            page = _decode(response.content, response, (dict, list))
            data = _items(page, response)
            items.extend(data)
            total = page.get("total") if isinstance(page, dict) else None
            if not data or not isinstance(total, int) or len(items) >= total:
                return items

    def _object(self, method: str, path: str, **kwargs: Any) -> Json:
        """An object with an ``id`` (an agent's, a session's); else :class:`NotAPlatform`."""
        response = self._request(method, path, **kwargs)
        body: Json = _decode(response.content, response, dict)
        if body.get("id") in (None, ""):
            raise NotAPlatform(response)
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise api_error_from_response(response)
        return response

    def _stream(self, method: str, path: str, body: Json) -> _Stream:
        return _Stream(self._http, method, path, body)


class _Stream:
    """A streaming request that raises :class:`ApiError` for an error status."""

    def __init__(self, http: httpx.Client, method: str, path: str, body: Json) -> None:
        self._cm = http.stream(method, path, json=body, timeout=httpx.Timeout(30.0, read=None))

    def __enter__(self) -> httpx.Response:
        response = self._cm.__enter__()
        if response.is_error:
            response.read()
            error = api_error_from_response(response)
            self._cm.__exit__(None, None, None)
            raise error
        return response

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cm.__exit__(exc_type, exc, traceback)


def path_segment(value: str) -> str:
    """``value`` escaped as one URL path segment (``/`` included), so a user-given name or id
    can never reach another endpoint (``lap stop ../agents/x``). Every id put into a URL path
    goes through here. Raises a usage :class:`LapError` for ``""``, ``.`` and ``..``, which
    URL normalisation would drop or resolve."""
    if value in ("", ".", ".."):
        raise LapError(f"not a valid id: {value!r}", ExitStatus.USAGE)
    return quote(value, safe="")


def _session_path(session_id: str, action: str = "") -> str:
    return f"/sessions/{path_segment(session_id)}" + (f"/{action}" if action else "")


def session_id_from(value: str) -> str:
    """Accept a session id or a URL containing ``/sessions/<uuid>``."""
    if "/" in value:
        match = UUID_RE.search(value.split("/sessions/", 1)[-1])
        if match:
            return match.group(0)
    return value


def _decode(text: str | bytes, response: httpx.Response, kind: type | tuple[type, ...]) -> Any:
    """``text`` (from ``response``) parsed as JSON of type ``kind``; raises
    :class:`NotAPlatform` for anything else, so a web page never surfaces as a traceback."""
    try:
        value = json.loads(text)
    except ValueError:
        raise NotAPlatform(response) from None
    if not isinstance(value, kind):
        raise NotAPlatform(response)
    return value


def _items(page: Json | list[Any], response: httpx.Response) -> list[Json]:
    """The objects of a list answer: a bare array or ``{"data": [...]}``."""
    data = page if isinstance(page, list) else page.get("data") or []
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise NotAPlatform(response)
    return data


def _json_or_empty(response: httpx.Response) -> Json:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _parse_event(data: str) -> Json:
    try:
        event = json.loads(data)
    except ValueError:
        return {"type": "text", "text": data}
    return event if isinstance(event, dict) else {"type": "text", "text": str(event)}
