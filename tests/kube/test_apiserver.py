"""The API server double answers the real ``kubernetes`` client as a real server would: the
semantics the driver relies on (issue 7). No kubelet here: pods stay Pending, deletes are
immediate."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client import ApiException

from sandboxes.drivers import kube_manifests as manifests
from sandboxes.drivers.base import SandboxSpec
from tests.kube.double.apiserver import ApiServer
from tests.kube.double.cluster import PRIORITY_CLASSES
from tests.kube.double.store import Store

pytestmark = pytest.mark.k8s_fake
NAMESPACE = "lap-sandboxes"


@pytest.fixture(scope="module")
def api():
    server = ApiServer(Store(), priority_classes=PRIORITY_CLASSES).start()
    yield server
    server.stop()


@pytest.fixture
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(client.ApiClient(client.Configuration(host=api.url)))


def sandbox_spec(**labels: str) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=str(uuid.uuid4()),
        harness="shell",
        runner_token="token",
        labels=labels,
        vault_material={"key.txt": b"k", "ca.pem": b"c"},
    )


def make_pod(spec: SandboxSpec | None = None, **changes):
    pod = manifests.pod_manifest(
        manifests.PodOptions(), spec or sandbox_spec(), trust_config_map="t", has_upstream_ca=False
    )
    for field, value in changes.items():
        setattr(pod.spec, field, value)
    return pod


def status_of(error: ApiException) -> dict:
    return json.loads(error.body)


def test_create_get_and_a_second_create_is_409_already_exists(core):
    spec = sandbox_spec()
    created = core.create_namespaced_pod(NAMESPACE, make_pod(spec))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.status.phase == "Pending"
    assert core.read_namespaced_pod(created.metadata.name, NAMESPACE).metadata.uid == (
        created.metadata.uid
    )
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(NAMESPACE, make_pod(spec))
    body = status_of(raised.value)
    assert raised.value.status == 409
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "AlreadyExists", 409)
    assert body["message"] == f'pods "{created.metadata.name}" already exists'


def test_missing_objects_are_404_not_found(core):
    for call in (core.read_namespaced_pod, core.delete_namespaced_pod, core.read_namespaced_secret):
        with pytest.raises(ApiException) as raised:
            call("lap-nope", NAMESPACE)
        assert raised.value.status == 404
        assert status_of(raised.value)["reason"] == "NotFound"


def test_invalid_bodies_are_422_with_the_cause(api, core):
    pod = make_pod()
    pod.spec.containers[0].volume_mounts[0].name = "no-such-volume"
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(NAMESPACE, pod)
    assert raised.value.status == 422
    body = status_of(raised.value)
    assert body["reason"] == "Invalid"
    assert "spec.containers[0].volumeMounts[0].name" in body["message"]
    # Fields the client's models do not know are refused (strict decoding), wrong types too.
    bad = client.ApiClient().sanitize_for_serialization(make_pod())
    bad["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    url = api.url + f"/api/v1/namespaces/{NAMESPACE}/pods"
    reply = httpx.post(url, json=bad)
    assert reply.status_code == 422
    assert 'unknown field "spec.containers[0].imagePullPolicyy"' in reply.json()["message"]
    bad["spec"]["containers"][0].pop("imagePullPolicyy")
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "7681"
    reply = httpx.post(url, json=bad)
    assert (reply.status_code, reply.json()["reason"]) == (422, "Invalid")


def test_unknown_priority_class_is_forbidden(core):
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(NAMESPACE, make_pod(priority_class_name="no-such-class"))
    assert raised.value.status == 403
    assert "no PriorityClass with name no-such-class" in status_of(raised.value)["message"]


def test_label_selectors_pick_pods(core):
    session = str(uuid.uuid4())
    mine = core.create_namespaced_pod(
        NAMESPACE, make_pod(sandbox_spec(**{"lap.session/id": session}))
    )
    core.create_namespaced_pod(NAMESPACE, make_pod(sandbox_spec(**{"lap.session/id": "other"})))
    found = core.list_namespaced_pod(NAMESPACE, label_selector=f"lap.session/id={session}").items
    assert [p.metadata.name for p in found] == [mine.metadata.name]
    not_other = core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/managed-by=lap,lap.session/id!=other"
    ).items
    assert mine.metadata.name in {p.metadata.name for p in not_other}
    assert "other" not in {p.metadata.labels.get("lap.session/id") for p in not_other}
    assert core.list_namespaced_pod("elsewhere").items == []


def test_watch_streams_changes_after_a_resource_version(core):
    created = core.create_namespaced_pod(NAMESPACE, make_pod())
    name = created.metadata.name

    def later() -> None:
        time.sleep(0.3)
        core.patch_namespaced_pod(
            name, NAMESPACE, {"metadata": {"labels": {"seen": "yes"}}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        core.delete_namespaced_pod(name, NAMESPACE)

    threading.Thread(target=later).start()
    events = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod,
        NAMESPACE,
        field_selector=f"metadata.name={name}",
        resource_version=created.metadata.resource_version,
        timeout_seconds=10,
    ):
        events.append((event["type"], event["object"].metadata.labels.get("seen")))
        if event["type"] == "DELETED":
            stream.stop()
    assert events == [("MODIFIED", "yes"), ("DELETED", "yes")]


def test_a_too_old_resource_version_is_410_gone(api, core):
    core.create_namespaced_pod(NAMESPACE, make_pod())
    api.store.history.clear()  # as if compacted
    core.create_namespaced_pod(NAMESPACE, make_pod())
    with pytest.raises(ApiException) as raised:
        for _ in watch.Watch().stream(
            core.list_namespaced_pod, NAMESPACE, resource_version="1", timeout_seconds=2
        ):
            pass
    assert raised.value.status == 410


def test_deleting_an_owner_deletes_what_it_owns(core):
    spec = sandbox_spec()
    pod = core.create_namespaced_pod(NAMESPACE, make_pod(spec))
    secret = core.create_namespaced_secret(
        NAMESPACE, manifests.secret_manifest(manifests.PodOptions(), spec)
    )
    core.patch_namespaced_secret(
        secret.metadata.name, NAMESPACE, manifests.owner_patch(pod),
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_secret(secret.metadata.name, NAMESPACE)
    assert raised.value.status == 404


def test_immutable_secrets_keep_their_data(core):
    spec = sandbox_spec()
    secret = core.create_namespaced_secret(
        NAMESPACE, manifests.secret_manifest(manifests.PodOptions(), spec)
    )
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_secret(
            secret.metadata.name, NAMESPACE, {"data": {"key.txt": "b3RoZXI="}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert raised.value.status == 422
    assert "immutable" in status_of(raised.value)["message"]


def test_network_policies_create_read_and_replace(api):
    networking = client.NetworkingV1Api(client.ApiClient(client.Configuration(host=api.url)))
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    policy = manifests.network_policy(manifests.PodOptions(namespace=namespace))
    created = networking.create_namespaced_network_policy(namespace, policy)
    with pytest.raises(ApiException) as raised:
        networking.create_namespaced_network_policy(namespace, policy)
    assert raised.value.status == 409
    policy.spec.ingress[0].ports = policy.spec.ingress[0].ports[:1]
    policy.metadata.resource_version = "1"  # stale
    with pytest.raises(ApiException) as raised:
        networking.replace_namespaced_network_policy(policy.metadata.name, namespace, policy)
    assert raised.value.status == 409
    policy.metadata.resource_version = created.metadata.resource_version
    replaced = networking.replace_namespaced_network_policy(policy.metadata.name, namespace, policy)
    assert [p.port for p in replaced.spec.ingress[0].ports] == [7681]
