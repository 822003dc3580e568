"""The platform's client for a vault sidecar's control endpoint (docs/vault-protocol.md).

``control_url`` is what a driver's ``endpoints().vault_url`` gives: ``"unix:///abs/ctl.sock"``
or ``"http://host:port"``. Every transport failure raises ``SidecarUnreachable``; answers are
returned as ``(status, json body or None)`` for the caller to judge. Tests swap the client for
a double with ``use_sidecar(factory)``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import httpx

from sandboxes.runner_client import tls_context

TIMEOUT = httpx.Timeout(10.0, connect=2.0)


class SidecarUnreachable(Exception):
    """The control endpoint did not answer (refused, reset or timed out)."""


class SidecarClient(Protocol):
    def health(self) -> tuple[int, dict[str, Any] | None]: ...

    def put_bundle(self, sealed: bytes) -> tuple[int, dict[str, Any] | None]: ...

    def interceptions(
        self, *, after: int, limit: int, read_token: str
    ) -> tuple[int, dict[str, Any] | None]: ...

    def close(self) -> None: ...


def read_token(sealing_key: bytes) -> str:
    """The bearer token for reads: hex HMAC-SHA256 of the sealing key under ``lap-vault-read``."""
    return hmac.new(sealing_key, b"lap-vault-read", hashlib.sha256).hexdigest()


class HttpSidecarClient:
    """Plain HTTP/1.1 to the control endpoint, over a unix socket or TCP."""

    def __init__(self, control_url: str) -> None:
        if control_url.startswith("unix://"):
            transport = httpx.HTTPTransport(
                uds=control_url.removeprefix("unix://"), verify=tls_context()
            )
            base_url = "http://vault"
        else:
            transport = httpx.HTTPTransport(verify=tls_context())
            base_url = control_url
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=TIMEOUT)

    def health(self) -> tuple[int, dict[str, Any] | None]:
        """``{"ok": true, "version": N|null}``: the bundle version the sidecar holds."""
        return self._call("GET", "/healthz")

    def put_bundle(self, sealed: bytes) -> tuple[int, dict[str, Any] | None]:
        return self._call("PUT", "/bundle", content=sealed)

    def interceptions(
        self, *, after: int, limit: int, read_token: str
    ) -> tuple[int, dict[str, Any] | None]:
        return self._call(
            "GET",
            "/interceptions",
            params={"after": after, "limit": limit},
            headers={"Authorization": f"Bearer {read_token}"},
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise SidecarUnreachable(type(error).__name__) from error
        try:
            body = reply.json() if reply.content else None
        except ValueError:
            body = None
        return reply.status_code, body


_factory: Callable[[str], SidecarClient] = HttpSidecarClient


def sidecar_client(control_url: str) -> SidecarClient:
    """A client for the sidecar whose control endpoint is ``control_url``."""
    return _factory(control_url)


@contextmanager
def use_sidecar(factory: Callable[[str], SidecarClient]) -> Iterator[None]:
    """Make ``sidecar_client`` build clients with ``factory`` inside the block; for tests."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous
