"""Pure logic of the sidecar (rules, swap) and the addon's DNS pinning, without a process."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import socket

import pytest
from cryptography.fernet import Fernet
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from sidecar.addon import VaultAddon, proxy_authorization
from sidecar.control import PushRejected, Vault, parse_bundle
from sidecar.resolver import CachedResolver
from sidecar.rules import EgressRules, HostPatterns, Refused, ip_literal, normalise_host
from sidecar.swap import (
    FIND_FROM,
    Policy,
    Scan,
    Secret,
    StreamRewriter,
    scan_header,
    swap_header,
    swap_target,
)

STUB = b"lap_stub_GH_0123456789abcdef0123456789abcdef"
VALUE = b"ghp_realvalue"


def _policy(egress: EgressRules | None = None) -> Policy:
    secret = Secret(
        "GH", STUB, VALUE, HostPatterns.parse(["api.github.com", "*.githubusercontent.com"])
    )
    return Policy("sb", 1, [secret], egress or EgressRules.parse())


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("API.GitHub.com.", "api.github.com"),
        ("[::1]", "::1"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_normalise_host(raw, normal):
    assert normalise_host(raw) == normal


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.github.com", True),
        ("raw.githubusercontent.com", True),
        ("githubusercontent.com", False),
        ("evilgithub.com", False),
        ("api.github.com.evil.test", False),
    ],
)
def test_allowed_hosts_exact_and_wildcard(host, allowed):
    assert _policy().by_stub[STUB].allowed_for(normalise_host(host)) is allowed


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.0.0.1", "127.1", "017700000001", "::ffff:127.0.0.1"]
)
def test_ip_literal_forms_are_recognised_and_refused(host):
    assert ip_literal(host) is not None
    with pytest.raises(Refused):
        EgressRules.parse().check_host(host)


def test_public_ip_allowed_and_named_loopback_allowed():
    EgressRules.parse().check_host("93.184.216.34")
    rules = EgressRules.parse(["localhost", "10.0.0.0/8"])
    rules.check_address("localhost", ipaddress.ip_address("127.0.0.1"))
    rules.check_address("internal.test", ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(Refused):
        rules.check_address("other.test", ipaddress.ip_address("127.0.0.1"))


def test_scan_finds_known_unknown_and_basic_stubs():
    policy = _policy()
    scan = Scan()
    basic = b"Basic " + base64.b64encode(b"x-access-token:" + STUB)
    assert scan_header(policy, scan, basic)
    assert scan.secrets == {policy.by_stub[STUB]} and not scan.unknown
    assert base64.b64decode(swap_header(policy, basic)[6:]) == b"x-access-token:" + VALUE
    scan.add(policy, b"lap_stub_GH_ffffffffffffffffffffffffffffffff")
    assert scan.unknown


def test_swap_target_keeps_other_components_encoded():
    policy = _policy()
    target = b"/a%20b/x?q=" + STUB.replace(b"_", b"%5F") + b"&keep=%2F"
    assert swap_target(policy, target) == b"/a%20b/x?q=" + VALUE + b"&keep=%2F"


@pytest.mark.parametrize("size", [1, 2, 5, 13, 44, 100])
def test_stream_rewriter_handles_every_split(size):
    policy = _policy()
    body = b"a" + STUB + b"b" * 7 + STUB + STUB + b"z"
    assert policy.stub_re is not None
    rewriter = StreamRewriter(policy.stub_re, policy.longest_stub, policy.swap)
    out = b""
    for start in range(0, len(body), size):
        chunks = rewriter(body[start : start + size])
        assert b"" not in chunks
        out += b"".join(chunks)
    out += b"".join(rewriter(b""))
    assert out == policy.swap(body)


@pytest.mark.parametrize("size", [1, 2, 5, 13, 44, 100])
def test_stream_rewriter_with_literals_handles_every_split(size):
    policy = _policy()
    body = b"a" + STUB + b"b" * 7 + STUB + STUB + b"z"
    assert policy.stub_re is not None
    rewriter = StreamRewriter(
        policy.stub_re, policy.longest_stub, policy.swap, literals=policy.by_stub
    )
    out = b"".join(b"".join(rewriter(body[i : i + size])) for i in range(0, len(body), size))
    assert out + b"".join(rewriter(b"")) == policy.swap(body)


def test_stream_scrub_holds_back_only_what_could_become_a_value():
    """An SSE event goes out whole at once; only a possible start of a value waits."""
    policy = _policy()
    assert policy.value_re is not None
    rewriter = StreamRewriter(
        policy.value_re, policy.longest_value, policy.scrub, literals=policy.by_value
    )
    event = b'data: {"delta": "hello"}\n\n'
    assert rewriter(event) == [event]
    assert rewriter(b"data: " + VALUE[:5]) == [b"data: "]
    assert rewriter(VALUE[5:] + b"\n\n") == [policy.scrub(VALUE) + b"\n\n"]


@pytest.mark.parametrize("size", [FIND_FROM - 1, FIND_FROM, 3 * FIND_FROM])
def test_has_value_agrees_with_the_regex_on_short_and_long_data(size):
    other = Secret("SK", b"lap_stub_SK_x", b"sk-othervalue", HostPatterns.parse(["x.example"]))
    policy = Policy("sb", 1, [*_policy().by_stub.values(), other], EgressRules.parse())
    assert policy.find_each_value and policy.value_re is not None
    filler = b"x" * size
    for value in (VALUE, other.value):
        for data in (filler, value + filler, filler + value, filler[: size // 2] + value[:-1]):
            assert policy.has_value(data) == (policy.value_re.search(data) is not None)


@pytest.mark.parametrize("size", [7, FIND_FROM - 5, FIND_FROM + 3])
def test_stream_scrub_with_prefilter_handles_every_split(size):
    policy = _policy()
    assert policy.value_re is not None
    body = (b"y" * FIND_FROM + VALUE) * 3 + b"z"
    rewriter = StreamRewriter(
        policy.value_re, policy.longest_value, policy.scrub, may_match=policy.has_value
    )
    out = b"".join(b"".join(rewriter(body[i : i + size])) for i in range(0, len(body), size))
    out += b"".join(rewriter(b""))
    assert out == policy.scrub(body)
    assert VALUE not in out


def test_parse_bundle_rejects_bad_entries():
    with pytest.raises(PushRejected):
        parse_bundle(b'{"sandbox_id": "sb", "version": 1, "secrets": [{"name": "X"}]}', None)
    good = b'{"sandbox_id": "sb", "version": 2, "secrets": [], "egress": {}}'
    with pytest.raises(PushRejected) as rejected:
        parse_bundle(good, "other")
    assert rejected.value.error == "sandbox_mismatch"
    assert parse_bundle(good, "sb").version == 2


def test_a_restarted_vault_numbers_its_records_after_its_predecessor():
    key = Fernet.generate_key()
    before = Vault(key)
    before.record(method="GET", host="a.example", decision="allowed")
    last = before.records[-1]["seq"]
    after = Vault(key)  # the same sandbox's sidecar, started again
    after.record(method="GET", host="b.example", decision="blocked")
    records, _ = after.records_after(last, 10)
    assert [r["host"] for r in records] == ["b.example"]


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _counting_resolver(answers: dict[str, list]):
    asked: list[str] = []

    async def resolve(host: str, port: int):
        asked.append(host)
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return [ipaddress.ip_address(a) for a in answer]

    return resolve, asked


async def test_cached_resolver_keeps_an_answer_for_its_ttl_only():
    resolve, asked = _counting_resolver({"a.example": ["93.184.216.34"]})
    clock = _Clock()
    cached = CachedResolver(resolve, ttl=10, clock=clock)
    first = await cached("a.example", 443)
    first.append(ipaddress.ip_address("10.0.0.1"))  # a caller's change is not cached
    clock.now += 9.9
    assert await cached("a.example", 443) == [ipaddress.ip_address("93.184.216.34")]
    assert asked == ["a.example"]
    clock.now += 0.2
    await cached("a.example", 443)
    assert asked == ["a.example", "a.example"]


async def test_cached_resolver_keeps_no_failure_and_a_bounded_number_of_hosts():
    resolve, asked = _counting_resolver(
        {"down.example": OSError("no name"), "empty.example": [], "b.example": ["1.1.1.1"]}
    )
    cached = CachedResolver(resolve, entries=1, clock=_Clock())
    for _ in range(2):
        with pytest.raises(OSError):
            await cached("down.example", 443)
        assert await cached("empty.example", 443) == []
    assert asked == ["down.example", "empty.example"] * 2
    await cached("b.example", 443)
    resolve_c, _ = _counting_resolver({"c.example": ["8.8.8.8"]})
    cached.resolve = resolve_c
    await cached("c.example", 443)  # evicts b.example, the least recently used
    cached.resolve = resolve
    await cached("b.example", 443)
    assert asked[-1] == "b.example" and asked.count("b.example") == 2


async def _connect_through(resolver, host: str):
    """A ``VaultAddon`` resolving with ``resolver`` that has seen ``CONNECT host:443``."""
    vault = Vault(Fernet.generate_key())
    vault.policy = _policy()
    addon = VaultAddon(vault, resolver=resolver)
    flow = tflow.tflow()
    flow.request.method = "CONNECT"
    flow.request.host, flow.request.port = host, 443
    await addon.http_connect(flow)
    return vault, addon, flow


async def test_server_connect_pins_the_checked_address_and_refuses_a_rebind():
    answers = [[ipaddress.ip_address("93.184.216.34")], [ipaddress.ip_address("10.0.0.7")]]

    async def resolver(host: str, port: int):
        return answers.pop(0)

    _, addon, flow = await _connect_through(resolver, "Rebind.Example.")
    assert flow.response is None
    data = server_hooks.ServerConnectionHookData(
        server=tflow.tserver_conn(), client=flow.client_conn
    )
    data.server.address, data.server.sni = ("rebind.example", 443), None
    await addon.server_connect(data)
    assert data.server.error is None
    assert data.server.address == ("93.184.216.34", 443)
    assert data.server.sni == "rebind.example"
    second = server_hooks.ServerConnectionHookData(
        server=tflow.tserver_conn(), client=flow.client_conn
    )
    second.server.address = ("rebind.example", 443)
    await addon.server_connect(second)
    assert second.server.error is not None
    assert second.server.error.startswith("egress_denied")


@pytest.mark.parametrize("answer", [socket.gaierror(-2, "Name or service not known"), []])
async def test_connect_to_a_name_without_an_address_says_so(answer):
    """Not an egress rule's refusal: 502 ``name_not_resolved``, recorded under that reason."""

    async def resolver(host: str, port: int):
        if isinstance(answer, Exception):
            raise answer
        return answer

    vault, _, flow = await _connect_through(resolver, "nowhere.example")
    assert flow.response is not None and flow.response.status_code == 502
    assert json.loads(flow.response.content) == {
        "error": "nowhere.example does not resolve to an address",
        "reason": "name_not_resolved",
    }
    assert "x-vault-blocked" not in flow.response.headers  # a failure, not a block
    (record,) = vault.records
    assert (record["host"], record["reason"], record["status"]) == (
        "nowhere.example",
        "name_not_resolved",
        502,
    )


def test_log_lines_never_show_the_proxy_secret():
    from sidecar.__main__ import _hidden_forms, _Redact

    secret = b"pa-secret-0123456789"
    header = proxy_authorization(secret).decode()
    redact = _Redact(Vault(Fernet.generate_key()), _hidden_forms(secret))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s / %s", (header, secret), None)
    assert redact.filter(record)
    assert record.getMessage() == "Basic [proxyauth] / b'[proxyauth]'"


async def test_a_repeated_proxy_authorization_header_is_refused():
    vault = Vault(Fernet.generate_key())
    vault.policy = _policy()
    addon = VaultAddon(vault, proxyauth=b"s3cret")
    flow = tflow.tflow()
    flow.request.method = "CONNECT"
    flow.request.headers.add("Proxy-Authorization", "Basic d3Jvbmc=")
    flow.request.headers.add("Proxy-Authorization", proxy_authorization(b"s3cret").decode())
    await addon.http_connect(flow)
    assert flow.response is not None and flow.response.status_code == 407
    assert addon.tunnels == {}
    assert [(r["reason"], r["status"]) for r in vault.records] == [("proxy_auth_required", 407)]
