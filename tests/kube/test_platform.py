"""The platform on the Kubernetes driver, end to end, against the test double (issue 7):
a real ``lap_serve`` whose sandboxes are pods the double runs for real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.kube.conftest import wait_for
from tests.kube.scenarios import (
    Target,
    a_pod_deleted_behind_the_platforms_back_turns_its_session_dead,
    a_session_comes_up_on_a_pod_and_its_terminal_round_trips,
    a_warm_pod_is_claimed_by_a_new_session,
    an_image_that_cannot_be_pulled_fails_the_session_with_the_reason,
    deleting_the_session_deletes_its_pod_and_secret,
    kubeconfig_b64,
    the_agent_reaches_the_outside_only_through_the_vault,
    the_stored_pod_has_every_security_field,
    the_vault_swaps_a_secret_on_the_way_out,
)
from tests.live import LivePlatform

pytestmark = [pytest.mark.k8s_fake, pytest.mark.e2e]


def serve(cluster, **env: str) -> Iterator[Target]:
    namespace = f"lap-{uuid.uuid4().hex[:8]}"
    live = LivePlatform()
    live.env.update(LAP_SANDBOX_DRIVER="kubernetes", LAP_K8S_NAMESPACE=namespace, **env)
    live.start()
    core = cluster.client()
    try:
        target = Target(live, core, namespace)
        target.drain_pool()  # the embedded default keeps two warm pods: start cold
        yield target
    finally:
        live.stop()
        for pod in core.list_namespaced_pod(namespace).items:
            core.delete_namespaced_pod(pod.metadata.name, namespace)
        wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="pods to go")


@pytest.fixture(scope="module")
def target(cluster, upstream_ca, tmp_path_factory) -> Iterator[Target]:
    kubeconfig = cluster.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    yield from serve(cluster, KUBECONFIG=str(kubeconfig), LAP_VAULT_UPSTREAM_CA=str(upstream_ca[1]))


def test_a_session_comes_up_on_a_pod_and_its_terminal_round_trips(target):
    a_session_comes_up_on_a_pod_and_its_terminal_round_trips(target)


def test_the_stored_pod_has_every_security_field(target):
    the_stored_pod_has_every_security_field(target)


def test_the_vault_swaps_a_secret_on_the_way_out(target, upstream):
    the_vault_swaps_a_secret_on_the_way_out(target, upstream)


def test_the_agent_reaches_the_outside_only_through_the_vault(target):
    the_agent_reaches_the_outside_only_through_the_vault(target)


def test_deleting_the_session_deletes_its_pod_and_secret(target):
    deleting_the_session_deletes_its_pod_and_secret(target)


def test_a_pod_deleted_behind_the_platforms_back_turns_its_session_dead(target):
    a_pod_deleted_behind_the_platforms_back_turns_its_session_dead(target)


def test_a_warm_pod_is_claimed_by_a_new_session(target):
    a_warm_pod_is_claimed_by_a_new_session(target)


def test_an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(cluster):
    # A platform of its own, configured with a base64 kubeconfig and a registry the double
    # has no image of.
    for broken in serve(
        cluster,
        LAP_K8S_KUBECONFIG_B64=kubeconfig_b64(cluster.kubeconfig()),
        LAP_K8S_IMAGE_REGISTRY="registry.invalid/lap",
    ):
        an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(broken)
