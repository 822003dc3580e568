"""Fixtures for the Kubernetes driver's tests (issue 7).

``cluster``: the test double (``tests/kube/double``) running pods for real, with a TLS
upstream (``upstream``, a trustme CA the vaults trust) as its only "internet". Its
prerequisites (root for network namespaces and cgroups, bubblewrap, iptables) are checked
once; without them the tests that need pods are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from kubernetes import client

from sandboxes.drivers.kubernetes import KubernetesDriver
from tests.kube.double.cluster import FakeCluster
from tests.vault.sidecar_support import Upstream

POD_TOOLS = ("bwrap", "nsenter", "unshare", "setpriv", "iptables", "ip")


@pytest.fixture(autouse=True)
def fake_driver():
    """No ``FakeDriver`` here: these tests use the Kubernetes driver (or none)."""
    yield None


def pods_unsupported() -> str | None:
    """Why the double cannot run pods on this machine, or None."""
    if os.geteuid() != 0:
        return "the pod double needs root (network namespaces, setns, cgroups, uids)"
    for tool in POD_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run scripts/install-system-deps"
    return None


@pytest.fixture(scope="session")
def upstream_ca(tmp_path_factory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("kube-upstream") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="session")
def upstream(upstream_ca) -> Iterator[Upstream]:
    server = Upstream(upstream_ca[0]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(upstream) -> Iterator[FakeCluster]:
    reason = pods_unsupported()
    if reason:
        pytest.skip(reason)
    double = FakeCluster(egress_ports=(upstream.port,)).start()
    yield double
    double.stop()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def core(cluster) -> client.CoreV1Api:
    return cluster.client()


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def make_driver(cluster, namespace, upstream_ca) -> Iterator:
    """``make_driver(**options)``: drivers on the double in this test's namespace; every pod
    and Secret they made is gone after the test."""
    made: list[KubernetesDriver] = []

    def make(**options) -> KubernetesDriver:
        options.setdefault("namespace", namespace)
        options.setdefault("instance", "kube-test")
        options.setdefault("upstream_ca", str(upstream_ca[1]))
        options.setdefault("unschedulable_grace", 2.0)
        driver = KubernetesDriver(
            api_client=client.ApiClient(client.Configuration(host=cluster.url)), **options
        )
        made.append(driver)
        return driver

    yield make
    core = cluster.client()
    for driver in made:
        for info in driver.list():
            driver.destroy(info.handle)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="pods to go")
