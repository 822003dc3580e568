"""The sandbox's Kubernetes objects, field by field, as the client sends them (issue 7)."""

from __future__ import annotations

import base64

import pytest
from kubernetes.client import ApiClient

from sandboxes.drivers import kube_manifests as manifests
from sandboxes.drivers.base import SandboxSpec

SANDBOX = "0b7c3e2a-9d1f-4c55-8a0e-3f1b2c4d5e6f"
OPTIONS = manifests.PodOptions(
    namespace="lap-sandboxes",
    instance="lap-prod",
    image_registry="registry.example/lap",
    image_tag="1.2.3",
    runtime_class="gvisor",
    node_selector={"pool": "sandboxes", "zone": "a"},
)
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def wire(model) -> dict:
    return ApiClient().sanitize_for_serialization(model)


def spec(**labels: str) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=SANDBOX,
        harness="claude-code",
        runner_token="runner-token-value",
        labels={"lap.session/id": "s-1", "lap.agent/id": "a-1", **labels},
        vault_material={"key.txt": b"sealing-key", "ca.pem": b"ca-key-and-chain"},
    )


@pytest.fixture
def pod() -> dict:
    return wire(
        manifests.pod_manifest(
            OPTIONS, spec(), trust_config_map="lap-trust-1", has_upstream_ca=True
        )
    )


def containers(pod: dict) -> dict[str, dict]:
    found = {c["name"]: c for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}
    assert len(found) == 3
    return found


def test_pod_metadata_labels_and_pod_level_security(pod):
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert pod["metadata"] == {
        "name": f"lap-{SANDBOX}",
        "namespace": "lap-sandboxes",
        "labels": {
            "app.kubernetes.io/managed-by": "lap",
            "app.kubernetes.io/instance": "lap-prod",
            "lap.sandbox/id": SANDBOX,
            "lap.session/id": "s-1",
            "lap.agent/id": "a-1",
        },
    }
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["shareProcessNamespace"] is False
    assert spec["enableServiceLinks"] is False
    assert (spec["hostNetwork"], spec["hostPID"], spec["hostIPC"]) == (False, False, False)
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 5
    assert spec["priorityClassName"] == "lap-sandbox-active"
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["nodeSelector"] == {"pool": "sandboxes", "zone": "a"}
    assert spec["securityContext"] == {
        "fsGroup": 10002,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert [c["name"] for c in spec["initContainers"]] == ["egress", "vault"]
    assert [c["name"] for c in spec["containers"]] == ["runner"]


def test_runner_container_is_unprivileged_read_only_and_limited(pod):
    runner = containers(pod)["runner"]
    assert runner["image"] == "registry.example/lap/harness-claude-code:1.2.3"
    assert runner["imagePullPolicy"] == "IfNotPresent"
    assert runner["command"] == ["python3", "-m", "sandboxes.runner"]
    assert runner["args"] == [
        "--listen",
        "tcp:0.0.0.0:7681",
        "--recording",
        "/run/lap/recording.cast",
    ]
    assert runner["securityContext"] == {**RESTRICTED, "runAsUser": 10001, "runAsGroup": 10001}
    assert runner["resources"] == {
        "requests": {"cpu": "2000m", "memory": "2048Mi"},
        "limits": {"cpu": "2000m", "memory": "2048Mi"},
    }
    assert runner["volumeMounts"] == [
        {"name": "work", "mountPath": "/work"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "run", "mountPath": "/run/lap"},
        {"name": "trust", "mountPath": "/etc/lap", "readOnly": True},
    ]
    assert runner["ports"] == [{"name": "runner", "containerPort": 7681, "protocol": "TCP"}]
    assert runner["readinessProbe"] == {
        "tcpSocket": {"port": 7681},
        "periodSeconds": 1,
        "failureThreshold": 3,
    }
    assert runner["workingDir"] == "/work"
    # The runner token comes from the Secret, never written into the pod spec.
    assert runner["env"] == [
        {
            "name": "LAP_RUNNER_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": f"lap-{SANDBOX}", "key": "runner-token", "optional": False}
            },
        },
        {"name": "HOME", "value": "/work"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "LANG", "value": "C.UTF-8"},
    ]
    assert "runner-token-value" not in str(pod)


def test_vault_is_a_native_sidecar_with_a_startup_probe_and_the_secret_alone(pod):
    vault = containers(pod)["vault"]
    assert vault["restartPolicy"] == "Always"
    assert vault["image"] == "registry.example/lap/vault:1.2.3"
    assert vault["command"] == ["python3", "-m", "sidecar"]
    assert vault["args"] == [
        "--proxy", "127.0.0.1:3128",
        "--control", "tcp:0.0.0.0:3129",
        "--state-dir", "/etc/lap-vault",
        "--sandbox-id", SANDBOX,
        "--upstream-ca", "/etc/lap-vault/upstream-ca.pem",
    ]  # fmt: skip
    assert vault["securityContext"] == {**RESTRICTED, "runAsUser": 10002, "runAsGroup": 10002}
    assert vault["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": 3129},
        "periodSeconds": 1,
        "failureThreshold": 120,
    }
    assert vault["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 3129}
    assert vault["ports"] == [{"name": "vault-control", "containerPort": 3129, "protocol": "TCP"}]
    assert vault["volumeMounts"] == [
        {"name": "vault-secret", "mountPath": "/etc/lap-vault", "readOnly": True},
        {"name": "vault-tmp", "mountPath": "/tmp"},
    ]
    assert vault["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    # The Secret is mounted into the vault and nowhere else; its runner token is not a file.
    mounting = [
        name
        for name, c in containers(pod).items()
        if any(m["name"] == "vault-secret" for m in c.get("volumeMounts") or [])
    ]
    assert mounting == ["vault"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["vault-secret"] == {
        "name": "vault-secret",
        "secret": {
            "secretName": f"lap-{SANDBOX}",
            "defaultMode": 0o440,
            "optional": False,
            "items": [
                {"key": "key.txt", "path": "key.txt"},
                {"key": "ca.pem", "path": "ca.pem"},
                {"key": "upstream-ca.pem", "path": "upstream-ca.pem"},
            ],
        },
    }
    assert volumes["trust"] == {
        "name": "trust",
        "configMap": {"name": "lap-trust-1", "defaultMode": 0o444},
    }
    assert volumes["work"]["emptyDir"] == {} and volumes["tmp"]["emptyDir"] == {}
    assert volumes["run"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["vault-tmp"]["emptyDir"] == {"medium": "Memory"}


def test_egress_init_container_alone_gets_net_admin(pod):
    egress = containers(pod)["egress"]
    assert "restartPolicy" not in egress  # a regular init container: runs to completion first
    assert egress["image"] == "registry.example/lap/vault:1.2.3"
    assert egress["command"] == ["/bin/sh", "-c"]
    assert egress["args"] == [manifests.EGRESS_SCRIPT]
    assert egress["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    others = [c for name, c in containers(pod).items() if name != "egress"]
    assert all(c["securityContext"]["capabilities"] == {"drop": ["ALL"]} for c in others)
    script = manifests.EGRESS_SCRIPT
    assert "--uid-owner 10002 -j ACCEPT" in script
    assert "-o lo -j ACCEPT" in script
    assert "ip6tables" in script and script.startswith("set -eu")


def test_warm_pool_pods_run_at_the_warm_priority_without_optional_fields():
    warm = SandboxSpec(
        sandbox_id=SANDBOX,
        harness="shell",
        runner_token="t",
        labels={"lap.pool/harness": "shell"},
        vault_material={"key.txt": b"k", "ca.pem": b"c"},
    )
    pod = wire(
        manifests.pod_manifest(
            manifests.PodOptions(), warm, trust_config_map="lap-trust-1", has_upstream_ca=False
        )
    )
    assert pod["spec"]["priorityClassName"] == "lap-sandbox-warm"
    assert pod["metadata"]["labels"]["lap.pool/harness"] == "shell"
    for absent in ("runtimeClassName", "nodeSelector"):
        assert absent not in pod["spec"]
    vault = containers(pod)["vault"]
    assert "--upstream-ca" not in vault["args"]
    secret_items = pod["spec"]["volumes"][0]["secret"]["items"]
    assert [i["key"] for i in secret_items] == ["key.txt", "ca.pem"]
    assert containers(pod)["runner"]["image"] == "lap/harness-shell:0.1.0"


def test_secret_holds_the_vault_material_and_runner_token_and_is_immutable():
    secret = wire(manifests.secret_manifest(OPTIONS, spec(), upstream_ca=b"upstream"))
    assert secret["metadata"]["name"] == f"lap-{SANDBOX}"
    assert secret["metadata"]["labels"]["lap.sandbox/id"] == SANDBOX
    assert secret["type"] == "Opaque" and secret["immutable"] is True
    decoded = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert decoded == {
        "key.txt": b"sealing-key",
        "ca.pem": b"ca-key-and-chain",
        "runner-token": b"runner-token-value",
        "upstream-ca.pem": b"upstream",
    }


def test_owner_patch_names_the_pod_by_uid():
    pod = manifests.pod_manifest(OPTIONS, spec(), trust_config_map="t", has_upstream_ca=False)
    pod.metadata.uid = "4d1c-uid"
    assert manifests.owner_patch(pod) == {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": f"lap-{SANDBOX}",
                    "uid": "4d1c-uid",
                    "blockOwnerDeletion": False,
                    "controller": False,
                }
            ]
        }
    }


def test_trust_config_map_is_named_by_its_content():
    first = wire(manifests.trust_config_map(OPTIONS, b"root + system CAs"))
    again = wire(manifests.trust_config_map(OPTIONS, b"root + system CAs"))
    other = wire(manifests.trust_config_map(OPTIONS, b"another root"))
    assert first["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]
    assert first["metadata"]["name"].startswith("lap-trust-")
    assert first["immutable"] is True
    assert first["data"] == {"ca-bundle.pem": "root + system CAs"}


def test_network_policy_ingress_from_the_platform_egress_dns_and_web_outside():
    policy = wire(manifests.network_policy(OPTIONS))
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "lap-sandboxes"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "lap"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {},
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "lap"},
                        "matchExpressions": [
                            {
                                "key": "app.kubernetes.io/component",
                                "operator": "In",
                                "values": ["web", "worker"],
                            }
                        ],
                    },
                }
            ],
            "ports": [{"port": 7681, "protocol": "TCP"}, {"port": 3129, "protocol": "TCP"}],
        }
    ]
    dns, web = spec["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert web["ports"] == [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]
    assert web["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(manifests.PRIVATE_V4)}},
        {"ipBlock": {"cidr": "::/0", "except": list(manifests.PRIVATE_V6)}},
    ]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        manifests.PRIVATE_V4
    )


def test_network_policy_narrows_to_the_platform_namespace_and_extra_sources():
    options = manifests.PodOptions(platform_namespace="lap", ingress_cidrs=("172.18.0.0/16",))
    sources = wire(manifests.network_policy(options))["spec"]["ingress"][0]["from"]
    assert sources[0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "lap"}
    }
    assert sources[1] == {"ipBlock": {"cidr": "172.18.0.0/16"}}


@pytest.mark.parametrize("bad", ["UPPER", "has_underscore", "-leading", "x" * 60, "a.b"])
def test_sandbox_ids_that_cannot_name_objects_are_refused(bad):
    with pytest.raises(manifests.InvalidSandboxId):
        manifests.object_name(bad)
