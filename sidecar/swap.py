"""Stub detection, stub → value swapping and value → stub scrubbing: pure functions, no mitmproxy.

A ``Policy`` is one immutable snapshot of a bundle. It precompiles one alternation regex over
all stubs and one over all real values (longest first, so a value that is a prefix of another
never wins), so a scan is one C-level pass whatever the number of secrets. Any occurrence of the
``lap_stub_`` prefix that is not a known stub marks the scan ``unknown``.

Stubs are found in raw bytes, inside ``Authorization: Basic`` credentials (base64-decoded), and in
URL path and query components after percent-decoding. ``StreamRewriter`` applies a swap or scrub
to a body that arrives in chunks, holding back ``longest match - 1`` bytes so a match split across
chunks is still found.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes

from sidecar.rules import EgressRules, HostPatterns

STUB_PREFIX = b"lap_stub_"
_BASIC = b"basic "
FIND_FROM = 4096
"""Data at least this long may be searched for real values one value at a time (see
``Policy.has_value``); on shorter data (headers, small JSON answers) one regex pass beats
20 separate calls."""
SHARED_PREFIX = 3
"""Values sharing a literal prefix this long keep the regex on long data too (see
``Policy.has_value``)."""


@dataclass(frozen=True)
class Secret:
    """One credential: its name (safe to log), its stub, its real value, where it may go."""

    name: str
    stub: bytes
    value: bytes
    allowed_hosts: HostPatterns

    def allowed_for(self, host: str) -> bool:
        return self.allowed_hosts.matches(host)


def _alternation(needles: Iterable[bytes]) -> re.Pattern[bytes] | None:
    ordered = sorted(set(needles), key=len, reverse=True)
    return re.compile(b"|".join(re.escape(n) for n in ordered)) if ordered else None


class Policy:
    """One bundle version, never mutated after construction; replaced by reference on reload."""

    def __init__(
        self, sandbox_id: str, version: int, secrets: Iterable[Secret], egress: EgressRules
    ) -> None:
        self.sandbox_id = sandbox_id
        self.version = version
        self.egress = egress
        self.by_stub = {s.stub: s for s in secrets}
        self.by_value = {s.value: s for s in self.by_stub.values()}
        self.stub_re = _alternation(self.by_stub)
        self.value_re = _alternation(self.by_value)
        self.longest_stub = max((len(s) for s in self.by_stub), default=len(STUB_PREFIX))
        self.longest_value = max((len(v) for v in self.by_value), default=1)
        self.find_each_value = len({v[:SHARED_PREFIX] for v in self.by_value}) > 1

    def swap(self, data: bytes) -> bytes:
        """Every known stub in ``data`` replaced by its real value."""
        if self.stub_re is None or STUB_PREFIX not in data:
            return data
        return self.stub_re.sub(lambda m: self.by_stub[m.group()].value, data)

    def scrub(self, data: bytes) -> bytes:
        """Every real value in ``data`` replaced by its stub."""
        if self.value_re is None:
            return data
        return self.value_re.sub(lambda m: self.by_value[m.group()].stub, data)

    def has_value(self, data: bytes) -> bool:
        """Whether ``data`` holds any real value; run on every response body.

        When the values share no literal prefix (``ghp_…``, ``sk-…``, hex keys mixed), ``re``
        has nothing to skip ahead with and tries every value at every byte: about 20 ms per MiB
        for 20 secrets. ``bytes.__contains__`` per value is a fast C substring search: about
        4 ms per MiB for the same 20. When they do share a prefix, ``re`` scans for it (about
        1 ms per MiB) and stays the faster choice.
        """
        if self.value_re is None:
            return False
        if self.find_each_value and len(data) >= FIND_FROM:
            return any(value in data for value in self.by_value)
        return self.value_re.search(data) is not None


@dataclass
class Scan:
    """What a request carries: the known secrets found and whether an unknown stub was seen."""

    secrets: set[Secret] = field(default_factory=set)
    unknown: bool = False

    def __bool__(self) -> bool:
        return bool(self.secrets) or self.unknown

    def add(self, policy: Policy, data: bytes) -> None:
        """Record the stubs in ``data`` (raw bytes, no decoding)."""
        prefixes = data.count(STUB_PREFIX)
        if not prefixes:
            return
        known = policy.stub_re.findall(data) if policy.stub_re is not None else []
        self.secrets.update(policy.by_stub[k] for k in known)
        if prefixes > len(known):
            self.unknown = True


def _basic_decode(value: bytes) -> bytes | None:
    if value[:6].lower() != _BASIC:
        return None
    try:
        return base64.b64decode(value[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def scan_header(policy: Policy, scan: Scan, value: bytes) -> bool:
    """Add the stubs in one header value (and inside Basic credentials); True if any was seen."""
    hit = False
    if STUB_PREFIX in value:
        scan.add(policy, value)
        hit = True
    decoded = _basic_decode(value)
    if decoded is not None and STUB_PREFIX in decoded:
        scan.add(policy, decoded)
        hit = True
    return hit


def swap_header(policy: Policy, value: bytes) -> bytes:
    """``value`` with its stubs swapped, Basic credentials decoded, swapped and re-encoded."""
    decoded = _basic_decode(value)
    if decoded is not None and STUB_PREFIX in decoded:
        return value[:6] + base64.b64encode(policy.swap(decoded))
    return policy.swap(value)


def scan_target(policy: Policy, scan: Scan, target: bytes) -> bool:
    """Add the stubs in a request target (path and query), raw and percent-decoded."""
    if b"%" not in target and STUB_PREFIX not in target:
        return False
    decoded = unquote_to_bytes(target.replace(b"+", b" "))
    if STUB_PREFIX not in decoded:
        return False
    scan.add(policy, decoded)
    return True


def swap_target(policy: Policy, target: bytes) -> bytes:
    """A request target with the stubs in every path segment and query component swapped;
    components without a stub keep their exact original encoding."""
    path, question, query = target.partition(b"?")
    out = b"/".join(_swap_component(policy, seg) for seg in path.split(b"/"))
    if question:
        pairs = []
        for pair in query.split(b"&"):
            key, eq, val = pair.partition(b"=")
            pairs.append(_swap_component(policy, key) + eq + _swap_component(policy, val))
        out += b"?" + b"&".join(pairs)
    return out


def _swap_component(policy: Policy, component: bytes) -> bytes:
    decoded = unquote_to_bytes(component.replace(b"+", b" "))
    if STUB_PREFIX not in decoded:
        return component
    return quote_from_bytes(policy.swap(decoded), safe="-._~").encode("ascii")


class StreamRewriter:
    """A ``flow.request.stream`` / ``flow.response.stream`` callable applying ``rewrite`` to a
    chunked body; ``pattern`` is the regex ``rewrite`` replaces and ``longest`` its longest match.

    It holds back ``longest - 1`` bytes between chunks so a split match is rewritten whole, never
    returns ``b""`` for a middle chunk (that would end an HTTP/1.1 chunked body early), and counts
    the bytes it passed on. ``on_match`` sees every match (the flow records what was swapped).
    ``may_match``, when given, is a cheaper exact test run first on the held-back bytes plus the
    new chunk; when it says no, the regex pass over that data is skipped.

    ``literals``, when given, are the strings ``pattern`` matches: then only a tail that could
    still grow into one of them is held back, not a fixed ``longest - 1`` bytes, so an event
    of a stream (an SSE frame ending in a blank line) goes out whole at once instead of waiting
    for the next chunk — a model's streamed answer is not held up at every pause.
    """

    def __init__(
        self,
        pattern: re.Pattern[bytes],
        longest: int,
        replace: Callable[[bytes], bytes],
        on_match: Callable[[bytes], None] | None = None,
        may_match: Callable[[bytes], bool] | None = None,
        literals: Iterable[bytes] | None = None,
    ) -> None:
        self.pattern = pattern
        self.carry = max(longest - 1, 0)
        self.literals = None if literals is None else tuple(literals)
        self.starts = None if self.literals is None else {lit[:1] for lit in self.literals}
        self.replace = replace
        self.on_match = on_match
        self.may_match = may_match
        self.buffer = b""
        self.bytes_in = 0
        self.bytes_out = 0

    def __call__(self, chunk: bytes) -> list[bytes]:
        self.bytes_in += len(chunk)
        data = self.buffer + chunk if self.buffer else chunk
        cut = len(data) if not chunk else len(data) - self._held(data)
        parts: list[bytes] = []
        pos = 0
        may_match = self.may_match is None or self.may_match(data)
        matches = self.pattern.finditer(data) if may_match else ()
        for match in matches:
            if match.start() >= cut:
                break
            if self.on_match is not None:
                self.on_match(match.group())
            parts.append(data[pos : match.start()])
            parts.append(self.replace(match.group()))
            pos = match.end()
        end = max(pos, cut, 0)
        parts.append(data[pos:end])
        self.buffer = data[end:]
        out = b"".join(parts)
        self.bytes_out += len(out)
        return [out] if out else []

    def _held(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` to keep for the next chunk."""
        literals, starts = self.literals, self.starts
        if literals is None or starts is None:
            return self.carry
        for start in range(max(len(data) - self.carry, 0), len(data)):
            if data[start : start + 1] not in starts:
                continue
            tail = data[start:]
            if any(len(lit) > len(tail) and lit.startswith(tail) for lit in literals):
                return len(data) - start
        return 0
