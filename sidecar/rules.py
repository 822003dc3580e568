"""Host and destination rules of the vault sidecar: pure functions, no mitmproxy.

- ``normalise_host`` puts a host name in the one form every comparison uses: lower case, no
  trailing dot, no brackets, IDNA (punycode) for non-ASCII labels.
- ``ip_literal`` recognises every spelling of an IP address a resolver would accept, including
  the legacy ``inet_aton`` forms (``2130706433``, ``0x7f.0.0.1``, ``127.1``), so none of them can
  slip past a rule as a "name".
- ``HostPatterns`` matches a host against exact names and ``*.suffix`` wildcards (used for a
  secret's ``allowed_hosts``).
- ``EgressRules`` decides which destinations may be reached at all (``allow_out``/``deny_out``),
  by name before resolution and by address after it; loopback, private, link-local, CGNAT and
  metadata addresses are refused unless an allow rule names that address or the exact host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class Refused(Exception):
    """A destination the policy does not allow; ``str(exc)`` says why, without any secret."""


class Unresolvable(Refused):
    """A host name the resolver has no address for: nothing to check, nowhere to connect."""


def normalise_host(host: str) -> str:
    """Lower-case, strip brackets and the trailing dot, and IDNA-encode ``host``.

    Returns ``""`` for a host that cannot be encoded (the caller refuses it).
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a C resolver accepts, else ``None``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c in "0123456789abcdefx." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_special(address: IPAddress) -> bool:
    """True for every address that is not a plain public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return is_special(address.ipv4_mapped)
    return address in METADATA_ADDRESSES or not address.is_global or address.is_multicast


@dataclass(frozen=True)
class HostPatterns:
    """Exact host names plus ``*.suffix`` wildcards; a wildcard matches subdomains only."""

    names: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> HostPatterns:
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in patterns:
            if raw.strip().startswith("*."):
                suffix = normalise_host(raw.strip()[2:])
                if suffix:
                    suffixes.append("." + suffix)
            elif name := normalise_host(raw):
                names.add(name)
        return cls(frozenset(names), tuple(suffixes))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes)

    def matches(self, host: str) -> bool:
        """``host`` must already be normalised."""
        return host in self.names or any(host.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class EgressRules:
    """Which destinations may be reached: ``deny_out`` wins, a non-empty ``allow_out`` allows only
    what it matches, special addresses need an allow rule naming the address or the exact host."""

    allow: HostPatterns
    deny: HostPatterns
    allow_networks: tuple[IPNetwork, ...]
    deny_networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, allow_out: Iterable[str] = (), deny_out: Iterable[str] = ()) -> EgressRules:
        allow, allow_networks = _split(allow_out)
        deny, deny_networks = _split(deny_out)
        return cls(allow, deny, allow_networks, deny_networks)

    def check_host(self, host: str) -> None:
        """Refuse a normalised host by name, or by address when it is an IP literal."""
        if not host:
            raise Refused("empty or invalid host")
        if self.deny.matches(host):
            raise Refused("host is in deny_out")
        literal = ip_literal(host)
        if literal is not None:
            self.check_address(host, literal)
        elif self.allow and not self.allow_networks and not self.allow.matches(host):
            raise Refused("host is not in allow_out")

    def check_address(self, host: str, address: IPAddress) -> None:
        """Refuse one resolved (or literal) address of the normalised ``host``."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if any(address in n for n in self.deny_networks):
            raise Refused("address is in deny_out")
        named = host in self.allow.names or any(address in n for n in self.allow_networks)
        if is_special(address) and not named:
            raise Refused("address is not public")
        if (self.allow or self.allow_networks) and not (named or self.allow.matches(host)):
            raise Refused("host is not in allow_out")


def _split(rules: Iterable[str]) -> tuple[HostPatterns, tuple[IPNetwork, ...]]:
    names: list[str] = []
    networks: list[IPNetwork] = []
    for raw in rules:
        rule = normalise_host(raw) if not raw.strip().startswith("*.") else raw.strip()
        try:
            networks.append(ipaddress.ip_network(rule, strict=False))
            continue
        except ValueError:
            pass
        literal = ip_literal(rule)
        if literal is not None:
            networks.append(ipaddress.ip_network(literal))
        else:
            names.append(rule)
    return HostPatterns.parse(names), tuple(networks)
