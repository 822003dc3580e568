"""The same scenarios against a real cluster (kind), when ``LAP_TEST_KUBECONFIG`` names one.

Prerequisites (docs/kubernetes.md, "Testing against a real cluster"): the LAP images loaded
into the cluster (``deploy/kind``), the PriorityClasses ``lap-sandbox-active`` and
``lap-sandbox-warm``, and the pod network reachable from where pytest runs (the platform runs
here, out of the cluster): on Linux with kind, a route to the pod CIDR through the node and
``LAP_TEST_K8S_INGRESS_CIDRS`` set to the source range the NetworkPolicy must admit. Each run
gets a namespace of its own, deleted afterwards. Optional: ``LAP_TEST_K8S_IMAGE_REGISTRY``,
``LAP_TEST_K8S_IMAGE_TAG`` (defaults ``lap``, ``0.1.0``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.kube.scenarios import (
    Target,
    a_pod_deleted_behind_the_platforms_back_turns_its_session_dead,
    a_session_comes_up_on_a_pod_and_its_terminal_round_trips,
    a_warm_pod_is_claimed_by_a_new_session,
    an_image_that_cannot_be_pulled_fails_the_session_with_the_reason,
    deleting_the_session_deletes_its_pod_and_secret,
    the_agent_reaches_the_outside_only_through_the_vault,
    the_stored_pod_has_every_security_field,
    wait_for,
)
from tests.live import LivePlatform

KUBECONFIG = os.environ.get("LAP_TEST_KUBECONFIG", "")
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not KUBECONFIG,
        reason="LAP_TEST_KUBECONFIG is not set: no real cluster to run the Kubernetes "
        "scenarios against (see docs/kubernetes.md)",
    ),
]


@pytest.fixture(scope="module")
def core() -> client.CoreV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration))


@pytest.fixture(scope="module")
def namespace(core) -> Iterator[str]:
    name = f"lap-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def serve(core: client.CoreV1Api, namespace: str, **env: str) -> Iterator[Target]:
    live = LivePlatform()
    live.env.update(
        {
            "LAP_SANDBOX_DRIVER": "kubernetes",
            "KUBECONFIG": str(Path(KUBECONFIG).resolve()),
            "LAP_K8S_NAMESPACE": namespace,
            "LAP_K8S_INGRESS_CIDRS": os.environ.get("LAP_TEST_K8S_INGRESS_CIDRS", ""),
            "LAP_K8S_IMAGE_REGISTRY": os.environ.get("LAP_TEST_K8S_IMAGE_REGISTRY", "lap"),
            "LAP_K8S_IMAGE_TAG": os.environ.get("LAP_TEST_K8S_IMAGE_TAG", "0.1.0"),
            **env,
        }
    )
    live.start()
    try:
        target = Target(live, core, namespace)
        target.drain_pool()
        yield target
    finally:
        live.stop()
        selector = "app.kubernetes.io/managed-by=lap"
        core.delete_collection_namespaced_pod(namespace, label_selector=selector)
        wait_for(
            lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items,
            timeout=120,
            what="pods to go",
        )


@pytest.fixture(scope="module")
def target(core, namespace) -> Iterator[Target]:
    yield from serve(core, namespace)


def test_a_session_comes_up_on_a_pod_and_its_terminal_round_trips(target):
    a_session_comes_up_on_a_pod_and_its_terminal_round_trips(target)


def test_the_stored_pod_has_every_security_field(target):
    the_stored_pod_has_every_security_field(target)


def test_the_agent_reaches_the_outside_only_through_the_vault(target):
    the_agent_reaches_the_outside_only_through_the_vault(target)


@pytest.mark.skip(
    reason="needs an HTTPS upstream the pods may reach: the NetworkPolicy admits only public "
    "addresses on 80/443, and a test upstream on this machine is not one"
)
def test_the_vault_swaps_a_secret_on_the_way_out(target):
    """Covered against the double (test_platform.py), whose pods reach a local upstream."""


def test_deleting_the_session_deletes_its_pod_and_secret(target):
    deleting_the_session_deletes_its_pod_and_secret(target)


def test_a_pod_deleted_behind_the_platforms_back_turns_its_session_dead(target):
    a_pod_deleted_behind_the_platforms_back_turns_its_session_dead(target)


def test_a_warm_pod_is_claimed_by_a_new_session(target):
    a_warm_pod_is_claimed_by_a_new_session(target)


def test_an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(core, namespace):
    for broken in serve(core, namespace, LAP_K8S_IMAGE_REGISTRY="registry.invalid/lap"):
        an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(broken)
