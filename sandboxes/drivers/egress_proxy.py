"""The local driver's egress proxy: the only way out of a jail until the vault sidecar lands.

A small forwarding proxy (asyncio, stdlib only) that runs as its own process per sandbox,
outside the jail, listening on a unix socket that is bind-mounted into the jail at
``/run/lap/proxy.sock``. It speaks two forms of HTTP proxying:

- ``CONNECT host:port`` opens a tunnel (HTTPS, or anything else the policy allows);
- absolute-form requests (``GET http://host/path HTTP/1.1``) are forwarded once, in origin
  form, with ``Connection: close``; the bytes that follow go only to that same destination.

Every destination is checked by ``EgressRules`` before and after name resolution: deny rules
win over allow rules; an empty allow list allows every public destination; loopback, private,
link-local, multicast, reserved and cloud-metadata addresses are refused unless an allow rule
names that address (IP/CIDR) or the exact host name. The proxy connects to the address it
checked, so a second DNS answer cannot redirect it. Refusals answer ``403`` with a JSON body
``{"error": "egress_denied", "reason": ...}`` and a ``X-Lap-Egress-Reason`` header.

Run as ``python egress_proxy.py --fd N [--allow RULE]... [--deny RULE]... [--watch-pid PID]``
(the socket is inherited as fd ``N``; with ``--watch-pid`` the proxy exits when that process
exits) or ``--listen PATH`` for a socket path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("lap.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0
HEAD_TIMEOUT = 30.0
CHUNK = 64 * 1024
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
)


class Refused(Exception):
    """A destination the policy does not allow; ``str(exc)`` is the machine-readable reason."""


@dataclass(frozen=True)
class _Rules:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, rules: Iterable[str]) -> _Rules:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in rules:
            rule = _normalise_host(raw)
            if not rule:
                continue
            if rule.startswith("*."):
                suffixes.append(rule[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(rule, strict=False))
            except ValueError:
                names.add(rule)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.networks)

    def matches_name(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def matches_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _special(address: IPAddress) -> bool:
    """True for every address that is not a plain public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _special(address.ipv4_mapped)
    return address in METADATA_ADDRESSES or not address.is_global or address.is_multicast


class EgressRules:
    """Decides which ``host:port`` destinations (and which of their addresses) may be reached.

    Rules are exact names (``api.example.com``), ``*.suffix`` wildcards (subdomains only),
    IP addresses or CIDRs. ``deny_out`` wins; a non-empty ``allow_out`` allows only what it
    matches; loopback/private/link-local/metadata addresses need an allow rule naming that
    address or the exact host.
    """

    def __init__(self, allow_out: Iterable[str] = (), deny_out: Iterable[str] = ()) -> None:
        self.allow = _Rules.parse(allow_out)
        self.deny = _Rules.parse(deny_out)

    def check_host(self, host: str) -> None:
        """Refuse a host by name (or literal IP) before anything is resolved."""
        host = _normalise_host(host)
        if not host:
            raise Refused("empty host")
        if self.deny.matches_name(host):
            raise Refused(f"host {host} is in deny_out")
        literal = _literal_ip(host)
        if literal is not None:
            self.check_address(host, literal)
        elif self.allow and not self.allow.matches_name(host) and not self.allow.networks:
            raise Refused(f"host {host} is not in allow_out")

    def check_address(self, host: str, address: IPAddress) -> None:
        """Refuse one resolved (or literal) address of ``host``."""
        host = _normalise_host(host)
        if self.deny.matches_address(address):
            raise Refused(f"address {address} of {host} is in deny_out")
        named = host in self.allow.names or self.allow.matches_address(address)
        if _special(address) and not named:
            raise Refused(f"address {address} of {host} is not public")
        if self.allow and not (named or self.allow.matches_name(host)):
            raise Refused(f"host {host} ({address}) is not in allow_out")


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("malformed request line")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header")
        headers.append((name, value.strip()))
    return _Head(parts[0].upper(), parts[1], parts[2], headers)


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    else:
        host, port = authority, ""
    number = int(port) if port else default_port
    if not host or not 0 < number < 65536:
        raise ValueError("bad authority")
    return host, number


class EgressProxy:
    """Serves HTTP proxy connections under one ``EgressRules`` policy."""

    def __init__(self, rules: EgressRules) -> None:
        self.rules = rules

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection (one CONNECT tunnel or one forwarded request)."""
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            head = _parse_head(raw[:-4])
            if head.method == "CONNECT":
                host, port = _split_authority(head.target, 443)
            elif head.target.lower().startswith("http://"):
                rest = head.target[len("http://") :]
                authority, slash, path = rest.partition("/")
                host, port = _split_authority(authority, 80)
                path = slash + path if slash else "/"
            else:
                raise ValueError("only CONNECT and absolute http:// requests are proxied")
        except asyncio.LimitOverrunError:
            await _reply(writer, 431, "request head too large")
            return
        except ValueError as exc:
            await _reply(writer, 400, str(exc))
            return
        try:
            upstream_reader, upstream_writer = await self._open(host, port)
        except Refused as exc:
            log.info("deny %s %s:%s (%s)", head.method, host, port, exc)
            await _reply(writer, 403, str(exc), refused=True)
            return
        except (OSError, TimeoutError) as exc:
            log.info("fail %s %s:%s (%s)", head.method, host, port, exc)
            await _reply(writer, 502, f"cannot reach {host}:{port}: {exc}")
            return
        log.info("allow %s %s:%s", head.method, host, port)
        if head.method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream_writer.write(_origin_form(head, path))
        await _splice(reader, writer, upstream_reader, upstream_writer)

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.rules.check_host(host)
        host = _normalise_host(host)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        refusal: Refused | None = None
        last_error: OSError | None = None
        for family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            try:
                self.rules.check_address(host, address)
            except Refused as exc:
                refusal = refusal or exc
                continue
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(str(address), port, family=family), CONNECT_TIMEOUT
                )
            except OSError as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        raise refusal or Refused(f"no address for {host}")


def _origin_form(head: _Head, path: str) -> bytes:
    lines = [f"{head.method} {path} {head.version}"]
    lines += [f"{name}: {value}" for name, value in head.headers if name.lower() not in HOP_BY_HOP]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _reply(
    writer: asyncio.StreamWriter, status: int, reason: str, *, refused: bool = False
) -> None:
    body = json.dumps({"error": "egress_denied" if refused else "proxy_error", "reason": reason})
    phrase = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
    extra = f"X-Lap-Egress-Reason: {reason}\r\n" if refused else ""
    writer.write(
        (
            f"HTTP/1.1 {status} {phrase.get(status, 'Bad Gateway')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n{body}"
        ).encode("latin-1", "replace")
    )
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
        )
    finally:
        upstream_writer.close()
        with contextlib.suppress(Exception):
            await upstream_writer.wait_closed()


async def serve(sock: socket.socket, rules: EgressRules, watch_pid: int | None = None) -> None:
    """Serve proxy connections on a listening unix socket until cancelled or ``watch_pid`` exits."""
    proxy = EgressProxy(rules)
    server = await asyncio.start_unix_server(proxy.handle, sock=sock, limit=MAX_HEAD)
    async with server:
        if watch_pid is None:
            await server.serve_forever()
            return
        gone = asyncio.Event()
        pidfd = os.pidfd_open(watch_pid)
        asyncio.get_running_loop().add_reader(pidfd, gone.set)
        try:
            await gone.wait()
        finally:
            asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited listening unix socket")
    where.add_argument("--listen", help="a unix socket path to bind")
    parser.add_argument("--allow", action="append", default=[], help="an allow_out rule")
    parser.add_argument("--deny", action="append", default=[], help="a deny_out rule")
    parser.add_argument("--watch-pid", type=int, help="exit when this process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s egress %(message)s"
    )
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.listen)
        sock.listen(128)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sock, EgressRules(args.allow, args.deny), args.watch_pid))


if __name__ == "__main__":
    main()
