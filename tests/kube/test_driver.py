"""The Kubernetes driver against the test double, whose pods really run (issue 7): the runner
and the vault in the pod's own network namespace, reached at its 127.x pod IP."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.fernet import Fernet
from kubernetes import client

from sandboxes import registry
from sandboxes.drivers import kube_manifests as manifests
from sandboxes.drivers.base import DriverError, DriverUnavailable, Resources, SandboxSpec
from sandboxes.drivers.kubernetes import KubernetesDriver, load_configuration
from sandboxes.runner_client import RunnerClient
from tests.kube.conftest import wait_for
from tests.sandboxes.drivers.conftest import vault_material
from vault.sidecar_client import HttpSidecarClient, read_token

pytestmark = pytest.mark.k8s_fake
READY = 60.0


def make_spec(harness: str = "shell", **fields) -> SandboxSpec:
    sandbox_id = str(uuid.uuid4())
    return SandboxSpec(
        sandbox_id=sandbox_id,
        harness=harness,
        runner_token="runner-" + uuid.uuid4().hex,
        labels={"lap.session/id": str(uuid.uuid4())},
        vault_material=vault_material(sandbox_id),
        **fields,
    )


def sh(driver, handle, spec, script: str) -> tuple[int | None, str]:
    """Run ``script`` in the sandbox's runner container (``/exec``), with a PATH."""
    output, code = [], None
    with RunnerClient(driver.endpoints(handle).runner_url, spec.runner_token) as runner:
        env = {**driver.sandbox_env(), "PATH": "/usr/bin:/bin"}
        for event in runner.exec(["sh", "-c", script], timeout=60, env=env):
            output.append(event.get("data", ""))
            code = event.get("exit_code", code)
    return code, "".join(output)


def push(driver, handle, spec, secrets: list[dict], allow_out: list[str]) -> None:
    bundle = {
        "sandbox_id": spec.sandbox_id,
        "version": 1,
        "secrets": secrets,
        "egress": {"allow_out": allow_out, "deny_out": []},
    }
    sealed = Fernet(spec.vault_material["key.txt"]).encrypt(json.dumps(bundle).encode())
    sidecar = HttpSidecarClient(driver.endpoints(handle).vault_url)
    try:
        assert sidecar.put_bundle(sealed)[0] == 204
    finally:
        sidecar.close()


@pytest.fixture
def ready(make_driver):
    """``ready(**spec_fields) -> (driver, handle, spec)`` with the pod Ready."""

    def make(driver=None, **fields):
        driver = driver or make_driver()
        spec = make_spec(**fields)
        handle = driver.create(spec)
        driver.wait_ready(handle, READY)
        return driver, handle, spec

    return make


def test_pod_comes_up_and_the_runner_answers_at_the_pod_ip(ready, core, namespace):
    driver, handle, spec = ready()
    endpoints = driver.endpoints(handle)
    address = endpoints.runner_url.removeprefix("http://").rsplit(":", 1)[0]
    assert address.startswith("127.") and address != "127.0.0.1"
    assert endpoints.runner_url == f"http://{address}:7681"
    assert endpoints.vault_url == f"http://{address}:3129"
    with RunnerClient(endpoints.runner_url, spec.runner_token) as runner:
        assert runner.health() == {"ok": True, "started": False, "exit_code": None, "turn": False}
    pod = core.read_namespaced_pod(handle.ref, namespace)
    assert pod.status.phase == "Running" and pod.status.pod_ip == address
    assert pod.metadata.labels["lap.sandbox/id"] == spec.sandbox_id
    [info] = driver.list()
    assert (info.handle, info.state, info.reason) == (handle, "running", "")
    assert info.labels == {"lap.sandbox/id": spec.sandbox_id, **spec.labels}


def test_runner_container_is_confined(ready):
    driver, handle, spec = ready()
    code, output = sh(
        driver,
        handle,
        spec,
        "id -u; hostname; grep CapEff /proc/self/status; "
        "touch /opt/x 2>&1 || true; touch /work/ok && echo work-writable; "
        "ls /etc/lap-vault 2>&1 || true; cat /etc/lap/ca-bundle.pem | head -1",
    )
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "10001"
    assert lines[1] == handle.ref
    assert lines[2].split() == ["CapEff:", "0000000000000000"]
    assert "Read-only file system" in output
    assert "work-writable" in output
    assert "/etc/lap-vault" in output and "No such file or directory" in output
    assert lines[-1] == spec.vault_material["ca-bundle.pem"].decode().splitlines()[0]


def test_vault_swaps_a_secret_on_its_way_out_of_the_pod(ready, upstream):
    driver, handle, spec = ready()
    stub = "lap_stub_GITHUB_TOKEN_" + uuid.uuid4().hex
    value = "ghp_kube_" + uuid.uuid4().hex
    push(
        driver,
        handle,
        spec,
        [{"name": "GITHUB_TOKEN", "stub": stub, "value": value, "allowed_hosts": ["localhost"]}],
        ["localhost"],
    )
    code, output = sh(
        driver,
        handle,
        spec,
        "unset NO_PROXY no_proxy; curl -sS -m 20 "
        f'-H "Authorization: Bearer {stub}" https://localhost:{upstream.port}/kube-echo',
    )
    assert code == 0, output
    seen = [r for r in upstream.received if r.get("path") == "/kube-echo"][-1]
    assert ("Authorization", f"Bearer {value}") in [tuple(h) for h in seen["headers"]]
    assert value not in output and stub in output  # the echo was scrubbed back to the stub
    # The records are readable with the sealing key's token only.
    sidecar = HttpSidecarClient(driver.endpoints(handle).vault_url)
    try:
        key = spec.vault_material["key.txt"]
        assert sidecar.interceptions(after=0, limit=10, read_token="wrong")[0] == 401
        status, body = sidecar.interceptions(after=0, limit=10, read_token=read_token(key))
    finally:
        sidecar.close()
    assert status == 200 and body["records"][-1]["path"] == "/kube-echo"


def test_the_agent_can_neither_read_vault_records_nor_push_bundles(ready):
    """The vault's control port is on the pod's loopback too: reads need the token derived
    from the sealing key (in the vault's Secret and the platform's database only); a bundle
    must be sealed with that key."""
    driver, handle, spec = ready()
    code, output = sh(
        driver,
        handle,
        spec,
        "curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:3129/interceptions; "
        "curl -s -o /dev/null -w '%{http_code} ' "
        "-H 'Authorization: Bearer guess' http://127.0.0.1:3129/interceptions; echo; "
        "curl -s -X PUT --data-binary forged http://127.0.0.1:3129/bundle; echo; "
        "curl -s http://127.0.0.1:3129/healthz",
    )
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["401", "401"]
    assert json.loads(lines[1]) == {"error": "undecryptable"}
    assert json.loads(lines[2]) == {"ok": True, "version": None}  # nothing secret


def test_create_is_idempotent_and_the_pod_owns_its_secret(make_driver, core, namespace):
    driver = make_driver()
    spec = make_spec()
    handle = driver.create(spec)
    assert driver.create(spec) == handle
    pods = core.list_namespaced_pod(namespace).items
    assert [p.metadata.name for p in pods] == [handle.ref]
    secret = core.read_namespaced_secret(handle.ref, namespace)
    assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [
        ("Pod", handle.ref, pods[0].metadata.uid)
    ]
    assert base64.b64decode(secret.data["runner-token"]).decode() == spec.runner_token
    assert core.read_namespaced_config_map(
        pods[0].spec.volumes[-1].config_map.name, namespace
    ).data == {"ca-bundle.pem": spec.vault_material["ca-bundle.pem"].decode()}


def test_destroy_deletes_the_pod_and_its_secret_and_may_repeat(ready, core, namespace):
    driver, handle, _ = ready()
    driver.destroy(handle)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="the pod to go")
    assert core.list_namespaced_secret(namespace).items == []
    assert driver.list() == []
    driver.destroy(handle)  # already gone: fine


def test_a_pod_deleted_behind_the_drivers_back_leaves_the_list(ready, core, namespace):
    driver, handle, _ = ready()
    core.delete_namespaced_pod(handle.ref, namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="the pod to go")
    assert driver.list() == []
    # The Secret went with its owner (garbage collection).
    assert core.list_namespaced_secret(namespace).items == []


def test_an_oom_killed_runner_is_listed_as_exited_oomkilled(ready, cluster, namespace):
    driver, handle, spec = ready(resources=Resources(memory_mb=128, pids=256, cpus=1.0))
    run = cluster.kubelet.pods[(namespace, handle.ref)]
    runner = next(c for c in run.containers if c.name == "runner")
    if "memory" not in runner.groups:
        pytest.skip("cgroup v1 memory is not writable here: no OOM kills to observe")
    sh(driver, handle, spec, "python3 -c 'b = bytearray(2**30)'")
    wait_for(lambda: driver.list()[0].state == "exited", what="the OOM kill")
    [info] = driver.list()
    assert (info.state, info.reason) == ("exited", "OOMKilled")


def test_an_image_that_cannot_be_pulled_fails_wait_ready_with_the_reason(make_driver, core):
    driver = make_driver()
    spec = make_spec(harness="no-such-harness")
    handle = driver.create(spec)
    with pytest.raises(DriverError) as raised:
        driver.wait_ready(handle, READY)
    message = str(raised.value)
    assert message.startswith("runner: ImagePullBackOff: Back-off pulling image")
    assert "lap/harness-no-such-harness:0.1.0" in message
    [info] = driver.list()
    assert (info.state, info.reason) == ("pending", message)


def test_an_unschedulable_pod_fails_after_the_grace(make_driver, cluster):
    driver = make_driver(unschedulable_grace=1.0)
    spec = make_spec(resources=Resources(memory_mb=256, pids=256, cpus=64.0))
    handle = driver.create(spec)
    with pytest.raises(DriverError) as raised:
        driver.wait_ready(handle, READY)
    assert str(raised.value) == (
        "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes "
        "are available: 3 No preemption victims found for incoming pod."
    )


def test_wait_ready_reports_a_pod_deleted_while_starting(make_driver, core, namespace):
    driver = make_driver()
    spec = make_spec(harness="no-such-harness")
    handle = driver.create(spec)
    core.delete_namespaced_pod(handle.ref, namespace, grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="the pod to go")
    with pytest.raises(DriverError, match="deleted before it was ready"):
        driver.wait_ready(handle, READY)


def test_a_secret_left_without_its_pod_is_an_incomplete_sandbox(make_driver, core, namespace):
    driver = make_driver()
    spec = make_spec()
    core.create_namespaced_secret(
        namespace, manifests.secret_manifest(driver.options, spec)
    )  # as if the platform died before making the pod
    [info] = driver.list()
    assert (info.handle.sandbox_id, info.state, info.reason) == (
        spec.sandbox_id,
        "exited",
        "incomplete",
    )
    driver.destroy(info.handle)
    assert core.list_namespaced_secret(namespace).items == []


def test_the_network_policy_is_created_and_an_outdated_one_repaired(
    make_driver, cluster, namespace
):
    networking = client.NetworkingV1Api(client.ApiClient(client.Configuration(host=cluster.url)))
    make_driver().create(make_spec())
    policy = networking.read_namespaced_network_policy("lap-sandboxes", namespace)
    wanted = client.ApiClient().sanitize_for_serialization(policy.spec)
    policy.spec.ingress = []
    networking.replace_namespaced_network_policy("lap-sandboxes", namespace, policy)
    make_driver().create(make_spec())  # a new process of the platform
    repaired = networking.read_namespaced_network_policy("lap-sandboxes", namespace)
    assert client.ApiClient().sanitize_for_serialization(repaired.spec) == wanted


def test_a_spec_without_vault_material_is_refused(make_driver):
    spec = SandboxSpec(sandbox_id=str(uuid.uuid4()), harness="shell", runner_token="t")
    with pytest.raises(DriverError) as raised:
        make_driver().create(spec)
    assert str(raised.value) == "the vault's key material lacks key.txt, ca.pem, ca-bundle.pem"


def test_api_errors_become_driver_errors(make_driver):
    driver = make_driver(priority_class_active="no-such-class")
    with pytest.raises(DriverError) as raised:
        driver.create(make_spec())
    assert "403" in str(raised.value) and "no PriorityClass with name no-such-class" in str(
        raised.value
    )
    assert raised.value.retryable is False


def test_kube_config_from_base64_or_kubeconfig(cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    encoded = base64.b64encode(json.dumps(cluster.kubeconfig()).encode()).decode()
    configuration, namespace = load_configuration(encoded)
    assert (configuration.host, namespace) == (cluster.url, None)
    monkeypatch.setenv("KUBECONFIG", str(cluster.write_kubeconfig(tmp_path / "config")))
    assert load_configuration("")[0].host == cluster.url
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DriverUnavailable, match="no usable Kubernetes configuration"):
        load_configuration("")
    with pytest.raises(DriverUnavailable):
        load_configuration("not base64!")


def test_the_registry_builds_the_driver_from_settings(settings, cluster):
    settings.LAP_K8S_KUBECONFIG_B64 = base64.b64encode(
        json.dumps(cluster.kubeconfig()).encode()
    ).decode()
    settings.LAP_K8S_NAMESPACE = "from-settings"
    settings.LAP_K8S_NODE_SELECTOR = {"pool": "sandboxes"}
    settings.LAP_K8S_IMAGE_TAG = "9.9.9"
    settings.LAP_SANDBOX_DRIVER = "kubernetes"
    driver = registry.get_driver()
    assert isinstance(driver, KubernetesDriver)
    assert driver.options.namespace == "from-settings"
    assert dict(driver.options.node_selector) == {"pool": "sandboxes"}
    assert manifests.harness_image(driver.options, "shell") == "lap/harness-shell:9.9.9"
    assert driver.list() == []  # it talks to the double
