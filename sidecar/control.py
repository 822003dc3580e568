"""The sidecar's control endpoint (docs/vault-protocol.md, "Control endpoint").

``Vault`` holds the state the proxy reads: the current ``Policy`` (``None`` until the first
bundle) and the interception records. ``Vault.push`` unseals a Fernet token with the sandbox key,
validates the bundle and swaps in a new immutable ``Policy`` by one reference assignment, so a
request in flight keeps the snapshot it started with. ``ControlServer`` is a small HTTP/1.1
server (one request per connection) on its own listener, unix socket or TCP, in the proxy's loop.

Error answers never echo the bundle or any part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.fernet import Fernet, InvalidToken

from sidecar.rules import EgressRules, HostPatterns
from sidecar.swap import STUB_PREFIX, Policy, Secret

log = logging.getLogger("lap.sidecar.control")

RECORDS_KEPT = 10_000
MAX_BODY = 4 * 1024 * 1024
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0


class PushRejected(Exception):
    """A bundle push that is refused; ``status`` and ``error`` form the answer."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def read_token(key: bytes) -> str:
    """The bearer token for reads: hex HMAC-SHA256 of the key text under ``lap-vault-read``."""
    return hmac.new(key, b"lap-vault-read", hashlib.sha256).hexdigest()


def parse_bundle(payload: bytes, sandbox_id: str | None) -> Policy:
    """Build a ``Policy`` from the decrypted bundle JSON; raises ``PushRejected``."""
    try:
        bundle = json.loads(payload)
        bundle_sandbox = bundle["sandbox_id"]
        version = bundle["version"]
        secrets = []
        for entry in bundle["secrets"]:
            stub, value = entry["stub"], entry["value"]
            if not (
                isinstance(entry["name"], str)
                and isinstance(stub, str)
                and stub.encode().startswith(STUB_PREFIX)
                and isinstance(value, str)
                and value
                and isinstance(entry["allowed_hosts"], list)
            ):
                raise ValueError("bad secret entry")
            hosts = HostPatterns.parse(str(h) for h in entry["allowed_hosts"])
            secrets.append(Secret(entry["name"], stub.encode(), value.encode(), hosts))
        egress = bundle.get("egress") or {}
        rules = EgressRules.parse(
            [str(r) for r in egress.get("allow_out") or []],
            [str(r) for r in egress.get("deny_out") or []],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PushRejected(400, "malformed") from error
    if not isinstance(bundle_sandbox, str) or type(version) is not int:
        raise PushRejected(400, "malformed")
    if sandbox_id is not None and bundle_sandbox != sandbox_id:
        raise PushRejected(403, "sandbox_mismatch")
    return Policy(bundle_sandbox, version, secrets, rules)


class Vault:
    """The policy reference and the interception records shared by the addon and the endpoint."""

    def __init__(self, key: bytes, sandbox_id: str | None = None) -> None:
        self.key = key
        self.sandbox_id = sandbox_id
        self.fernet = Fernet(key)
        self.token = read_token(key)
        self.policy: Policy | None = None
        self.records: deque[dict[str, Any]] = deque(maxlen=RECORDS_KEPT)
        # Numbered from the start time in microseconds, not 1: a restarted sidecar's records
        # come after its predecessor's, so the platform's ``after`` cursor never skips them.
        self._seq = itertools.count(time.time_ns() // 1000)

    def push(self, token: bytes) -> Policy:
        """Unseal, validate and apply a bundle; raises ``PushRejected`` and keeps the old one."""
        try:
            payload = self.fernet.decrypt(token.strip())
        except (InvalidToken, ValueError, TypeError) as error:
            raise PushRejected(400, "undecryptable") from error
        current = self.policy
        policy = parse_bundle(payload, current.sandbox_id if current else self.sandbox_id)
        if current is not None and policy.version <= current.version:
            raise PushRejected(409, "stale_version")
        self.policy = policy
        log.info("bundle version %d applied (%d secrets)", policy.version, len(policy.by_stub))
        return policy

    def record(self, **fields: Any) -> None:
        """Append one interception record; ``fields`` must never hold a value or a stub."""
        self.records.append({"seq": next(self._seq), "time": time.time(), **fields})

    def records_after(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        found = [r for r in self.records if r["seq"] > after][:limit]
        return found, found[-1]["seq"] if found else after


class ControlServer:
    """Serves ``GET /healthz``, ``PUT /bundle`` and ``GET /interceptions`` for one ``Vault``."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    async def start(self, where: str) -> asyncio.Server:
        """Listen on ``unix:PATH`` or ``tcp:HOST:PORT``."""
        kind, _, address = where.partition(":")
        if kind == "unix":
            return await asyncio.start_unix_server(self._serve, path=address, limit=MAX_HEAD)
        if kind == "tcp":
            host, _, port = address.rpartition(":")
            return await asyncio.start_server(
                self._serve, host.strip("[]"), int(port), limit=MAX_HEAD
            )
        raise ValueError("--control must be unix:PATH or tcp:HOST:PORT")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._handle(reader), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, body = 400, {"error": "bad_request"}
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\nConnection: close\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode("ascii") + payload)
            await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any] | None]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length < 0 or length > MAX_BODY:
            return 413, {"error": "too_large"}
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        if url.path == "/healthz" and method == "GET":
            policy = self.vault.policy
            return 200, {"ok": True, "version": policy.version if policy else None}
        if url.path == "/bundle" and method == "PUT":
            try:
                self.vault.push(body)
            except PushRejected as rejected:
                log.warning("bundle push rejected: %s", rejected.error)
                return rejected.status, {"error": rejected.error}
            return 204, None
        if url.path == "/interceptions" and method == "GET":
            offered = headers.get("authorization", "")
            expected = f"Bearer {self.vault.token}"
            if not hmac.compare_digest(offered.encode(), expected.encode()):
                return 401, {"error": "unauthorized"}
            query = parse_qs(url.query)
            after = int(query.get("after", ["0"])[0])
            limit = max(1, min(int(query.get("limit", ["1000"])[0]), RECORDS_KEPT))
            records, next_seq = self.vault.records_after(after, limit)
            return 200, {"records": records, "next": next_seq}
        if url.path in ("/healthz", "/bundle", "/interceptions"):
            return 405, {"error": "method_not_allowed"}
        return 404, {"error": "not_found"}


_PHRASES = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
}
