"""The egress init container's rules, applied for real in a throwaway network namespace with a
route out (a veth pair), then tried by the agent's and the vault's uids (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from sandboxes.drivers.kube_manifests import EGRESS_SCRIPT, RUNNER_UID, VAULT_UID

pytestmark = pytest.mark.k8s_fake

# Made inside the namespace, before the rules: loopback, a listener on it, and a link whose
# far end nobody answers, so an allowed connection times out and a rejected one is refused.
SETUP = """set -eu
ip link set lo up
ip link add out0 type veth peer name out1
ip link set out0 up; ip link set out1 up
ip addr add 192.0.2.1/24 dev out0
ip route add 203.0.113.0/24 dev out0
if [ -e /proc/net/if_inet6 ]; then
    ip -6 addr add 2001:db8::1/64 dev out0 nodad
    ip -6 route add 2001:db8:1::/64 dev out0
fi
"""

PROBE = textwrap.dedent(
    """
    import errno, json, socket, sys

    def tcp(family, address):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(address)
            return "connected"
        except TimeoutError:
            return "left the pod"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()

    def udp(address):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        try:
            s.sendto(b"dns?", address)
            s.recv(1)
            return "answered"
        except TimeoutError:
            return "left the pod"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()

    result = {
        "https": tcp(socket.AF_INET, ("203.0.113.5", 443)),
        "dns": udp(("203.0.113.53", 53)),
        "loopback": tcp(socket.AF_INET, ("127.0.0.1", int(sys.argv[1]))),
    }
    if socket.has_ipv6:
        result["https6"] = tcp(socket.AF_INET6, ("2001:db8:1::5", 443))
    print(json.dumps(result))
    """
)

# The vault's proxy port; the namespace is this test's own, so nothing else uses it.
PROXY_PORT = 3128
LISTEN = (
    "import socket, time; s = socket.socket(); "
    f"s.bind(('127.0.0.1', {PROXY_PORT})); s.listen(8); time.sleep(60)"
)
PYTHON = "/usr/bin/python3"


def in_namespace(script: str) -> str:
    """Run ``script`` (bash) as root in a new network namespace; its stdout."""
    done = subprocess.run(
        ["unshare", "--net", "--", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def outcomes() -> dict[int, dict[str, str]]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "iptables", "ip")):
        pytest.skip("needs root, unshare, ip and iptables (scripts/install-system-deps)")
    output = in_namespace(
        f"{SETUP}\n"
        f"sh -c {_quote(EGRESS_SCRIPT)}\n"
        f"{PYTHON} -c {_quote(LISTEN)} & sleep 0.3\n"
        f"for uid in {RUNNER_UID} {VAULT_UID}; do\n"
        f'  echo "$uid $(setpriv --reuid=$uid --regid=$uid --clear-groups {PYTHON} -c '
        f'{_quote(PROBE)} {PROXY_PORT})"\n'
        "done\n"
        "kill %1\n"
    )
    return {
        int(line.split(" ", 1)[0]): json.loads(line.split(" ", 1)[1])
        for line in output.splitlines()
    }


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_the_agent_uid_cannot_open_connections_out_of_the_pod(outcomes):
    agent = outcomes[RUNNER_UID]
    assert agent["https"] == "ECONNREFUSED"  # rejected at once, not silently dropped
    assert agent["dns"] in ("ECONNREFUSED", "EPERM")
    if "https6" in agent:
        assert agent["https6"] == "ECONNREFUSED"


def test_the_vault_uid_may_leave_the_pod(outcomes):
    vault = outcomes[VAULT_UID]
    assert vault["https"] == "left the pod"
    assert vault["dns"] == "left the pod"
    if "https6" in vault:
        assert vault["https6"] == "left the pod"


def test_both_reach_the_pods_loopback(outcomes):
    assert outcomes[RUNNER_UID]["loopback"] == outcomes[VAULT_UID]["loopback"] == "connected"


def test_the_rules_can_be_installed_twice(outcomes):
    """An init container may rerun (pod sandbox restart): same rules, no duplicates."""
    twice = f"sh -c {_quote(EGRESS_SCRIPT)}\n" * 2
    output = in_namespace(f"{SETUP}\n{twice}iptables -S; ip6tables -S")
    lines = output.splitlines()
    assert lines.count("-A OUTPUT -j LAP_EGRESS") == 2  # once for IPv4, once for IPv6
    chain = [line for line in lines if line.startswith("-A LAP_EGRESS")]
    common = [
        "-A LAP_EGRESS -o lo -j ACCEPT",
        "-A LAP_EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A LAP_EGRESS -m owner --uid-owner {VAULT_UID} -j ACCEPT",
    ]
    assert chain == [
        *common,
        "-A LAP_EGRESS -p tcp -j REJECT --reject-with tcp-reset",
        "-A LAP_EGRESS -j REJECT --reject-with icmp-port-unreachable",
        *common,
        "-A LAP_EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT",
        "-A LAP_EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT",
        "-A LAP_EGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT",
        "-A LAP_EGRESS -p tcp -j REJECT --reject-with tcp-reset",
        "-A LAP_EGRESS -j REJECT --reject-with icmp6-port-unreachable",
    ]
