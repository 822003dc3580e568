"""The Kubernetes objects of one sandbox, as ``kubernetes`` client models (pure functions).

Per sandbox (``docs/kubernetes.md``):

- a **Secret** ``lap-<id>``: the vault's sealing key (``key.txt``) and intermediate CA
  (``ca.pem``), the runner token, and the upstream CA bundle when one is configured;
- a **Pod** ``lap-<id>``:

  - init container ``egress`` (the vault image, root with ``NET_ADMIN`` only) installs
    fail-closed ``OUTPUT`` rules in the pod's network namespace: loopback and replies are
    allowed, new connections only for the vault's uid (``EGRESS_SCRIPT``);
  - native sidecar ``vault`` (an init container with ``restartPolicy: Always`` and a startup
    probe on its control port), uid ``VAULT_UID``: mitmproxy on the pod's loopback for the
    agent, the control endpoint on the pod IP for the platform; the only container that mounts
    the Secret's vault files;
  - container ``runner`` (the harness image), uid ``RUNNER_UID``: the runner on the pod IP,
    the agent under its PTY; the runner token comes from the Secret as one env variable.

  Every container: no privilege escalation, capabilities dropped, read-only root filesystem,
  ``RuntimeDefault`` seccomp; ``automountServiceAccountToken`` and ``shareProcessNamespace``
  off; writable ``/work``, ``/tmp`` and ``/run/lap`` are emptyDirs.
- a **ConfigMap** ``lap-trust-<hash>`` per trust bundle (the platform root plus the system
  CAs; not a secret), mounted read-only at ``/etc/lap`` in the runner container;
- per namespace, one **NetworkPolicy** ``lap-sandboxes``: ingress to the runner and vault
  control ports only from the platform's pods, egress only DNS and 80/443 outside the
  private ranges.

Nothing here talks to a cluster: the driver sends these, the tests read them field by field.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubernetes.client import (
    V1Capabilities,
    V1ConfigMap,
    V1ConfigMapVolumeSource,
    V1Container,
    V1ContainerPort,
    V1EmptyDirVolumeSource,
    V1EnvVar,
    V1EnvVarSource,
    V1HTTPGetAction,
    V1IPBlock,
    V1KeyToPath,
    V1LabelSelector,
    V1LabelSelectorRequirement,
    V1NetworkPolicy,
    V1NetworkPolicyEgressRule,
    V1NetworkPolicyIngressRule,
    V1NetworkPolicyPeer,
    V1NetworkPolicyPort,
    V1NetworkPolicySpec,
    V1ObjectMeta,
    V1OwnerReference,
    V1Pod,
    V1PodSecurityContext,
    V1PodSpec,
    V1Probe,
    V1ResourceRequirements,
    V1SeccompProfile,
    V1Secret,
    V1SecretKeySelector,
    V1SecretVolumeSource,
    V1SecurityContext,
    V1TCPSocketAction,
    V1Volume,
    V1VolumeMount,
)

from .base import LABEL_POOL_HARNESS, LABEL_SANDBOX, LABEL_SESSION, TRUST_BUNDLE_PATH, SandboxSpec

RUNNER_PORT = 7681
VAULT_PROXY_PORT = 3128
VAULT_CONTROL_PORT = 3129
RUNNER_UID = 10001
VAULT_UID = 10002
RUNNER_CONTAINER = "runner"
VAULT_CONTAINER = "vault"
EGRESS_CONTAINER = "egress"
NETWORK_POLICY = "lap-sandboxes"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "lap"
PLATFORM_NAME = "lap"
PLATFORM_COMPONENTS = ("web", "worker")
# Keys of the per-sandbox Secret; the vault's files keep the names its state dir expects.
VAULT_KEY_FILE = "key.txt"
VAULT_CA_FILE = "ca.pem"
UPSTREAM_CA_FILE = "upstream-ca.pem"
RUNNER_TOKEN_KEY = "runner-token"  # noqa: S105 - a key name, not a secret
TRUST_KEY = "ca-bundle.pem"
VAULT_DIR = "/etc/lap-vault"
TRUST_DIR = TRUST_BUNDLE_PATH.rsplit("/", 1)[0]
RUN_DIR = "/run/lap"
CONTAINER_TMP = "/tmp"  # noqa: S108 - every container's own emptyDir, never the node's
TERMINATION_GRACE = 5  # seconds: the runner and the vault stop at once on SIGTERM
# Where the vault may not take traffic (the NetworkPolicy's except lists): cluster, node and
# metadata addresses live in these ranges on every common setup.
PRIVATE_V4 = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
)
PRIVATE_V6 = ("fc00::/7", "fe80::/10", "::1/128")
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
NAME_MAX = 63 - len("lap-")

# Fail-closed egress for the pod's network namespace, for IPv4 and (when the kernel has it)
# IPv6: loopback (the agent reaches the vault at 127.0.0.1:3128) and replies on connections
# the pod accepted (the platform's, to the runner and the vault) pass; a new connection out
# of the pod passes only for the vault's uid; anything else is rejected at once (TCP with a
# reset), so a proxy-unaware tool fails loudly instead of leaking or hanging. IPv6 neighbour
# discovery is the kernel's own traffic, owned by no uid: without it the vault could not reach
# its IPv6 gateway. Idempotent: an init container can rerun.
EGRESS_SCRIPT = f"""set -eu
rules() {{  # rules IPTABLES REJECT_WITH [ICMPV6_TYPE...]
    t=$1 reject=$2
    shift 2
    "$t" -w -N LAP_EGRESS 2>/dev/null || "$t" -w -F LAP_EGRESS
    "$t" -w -A LAP_EGRESS -o lo -j ACCEPT
    "$t" -w -A LAP_EGRESS -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    "$t" -w -A LAP_EGRESS -m owner --uid-owner {VAULT_UID} -j ACCEPT
    for icmp in "$@"; do
        "$t" -w -A LAP_EGRESS -p ipv6-icmp --icmpv6-type "$icmp" -j ACCEPT
    done
    "$t" -w -A LAP_EGRESS -p tcp -j REJECT --reject-with tcp-reset
    "$t" -w -A LAP_EGRESS -j REJECT --reject-with "$reject"
    "$t" -w -C OUTPUT -j LAP_EGRESS 2>/dev/null || "$t" -w -I OUTPUT 1 -j LAP_EGRESS
}}
rules iptables icmp-port-unreachable
if [ -e /proc/net/if_inet6 ]; then
    rules ip6tables icmp6-port-unreachable \\
        router-solicitation neighbour-solicitation neighbour-advertisement
fi
"""


@dataclass(frozen=True)
class PodOptions:
    """Deployment-wide choices for sandbox pods (from ``LAP_K8S_*`` settings)."""

    namespace: str = "lap-sandboxes"
    instance: str = "lap"
    image_registry: str = "lap"
    image_tag: str = "0.1.0"
    runtime_class: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    priority_class_active: str = "lap-sandbox-active"
    priority_class_warm: str = "lap-sandbox-warm"
    # The namespace the platform's pods run in (None: any namespace, by label only).
    platform_namespace: str | None = None
    # Extra ingress sources besides the platform's pods (out-of-cluster development).
    ingress_cidrs: tuple[str, ...] = ()


class InvalidSandboxId(ValueError):
    """The sandbox id cannot name Kubernetes objects."""


def object_name(sandbox_id: str) -> str:
    """``lap-<id>``: the name of the sandbox's Pod and Secret."""
    if len(sandbox_id) > NAME_MAX or not NAME.fullmatch(sandbox_id):
        raise InvalidSandboxId(
            f"sandbox id {sandbox_id!r} is not a DNS label (lowercase letters, digits, '-')"
        )
    return f"lap-{sandbox_id}"


def harness_image(options: PodOptions, harness: str) -> str:
    return f"{options.image_registry}/harness-{harness}:{options.image_tag}"


def vault_image(options: PodOptions) -> str:
    return f"{options.image_registry}/vault:{options.image_tag}"


def selector_labels(options: PodOptions) -> dict[str, str]:
    """The labels every object of this deployment carries (``list`` selects on them)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: options.instance}


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def sandbox_labels(options: PodOptions, spec: SandboxSpec) -> dict[str, str]:
    """The deployment's labels, the spec's ``lap.*`` labels and the sandbox id."""
    return {**selector_labels(options), **spec.labels, LABEL_SANDBOX: spec.sandbox_id}


def is_warm(spec: SandboxSpec) -> bool:
    """A warm-pool sandbox not yet claimed: it runs at the lower priority."""
    return LABEL_POOL_HARNESS in spec.labels and LABEL_SESSION not in spec.labels


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_manifest(
    options: PodOptions, spec: SandboxSpec, upstream_ca: bytes | None = None
) -> V1Secret:
    """The sandbox's Secret: vault key material, runner token, optional upstream CA.

    Immutable; created before the Pod (which then never waits for it) and given the Pod as
    owner right after (``owner_patch``), so deleting the Pod deletes it.
    """
    data: dict[str, bytes | str] = {
        VAULT_KEY_FILE: _b64(spec.vault_material[VAULT_KEY_FILE]),
        VAULT_CA_FILE: _b64(spec.vault_material[VAULT_CA_FILE]),
        RUNNER_TOKEN_KEY: _b64(spec.runner_token.encode()),
    }
    if upstream_ca:
        data[UPSTREAM_CA_FILE] = _b64(upstream_ca)
    return V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=V1ObjectMeta(
            name=object_name(spec.sandbox_id),
            namespace=options.namespace,
            labels=sandbox_labels(options, spec),
        ),
        type="Opaque",
        immutable=True,
        data=data,
    )


def owner_patch(pod: V1Pod) -> dict[str, object]:
    """A JSON merge patch making ``pod`` the owner of an object (garbage collection)."""
    assert pod.metadata is not None and pod.metadata.uid and pod.metadata.name
    reference = V1OwnerReference(
        api_version="v1",
        kind="Pod",
        name=pod.metadata.name,
        uid=pod.metadata.uid,
        block_owner_deletion=False,
        controller=False,
    )
    return {"metadata": {"ownerReferences": [reference.to_dict(serialize=True)]}}


def trust_config_map(options: PodOptions, bundle: bytes) -> V1ConfigMap:
    """The trust bundle as an immutable ConfigMap named by its content (shared by pods)."""
    digest = hashlib.sha256(bundle).hexdigest()[:16]
    return V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=V1ObjectMeta(
            name=f"lap-trust-{digest}",
            namespace=options.namespace,
            labels={**selector_labels(options), LABEL_COMPONENT: "trust"},
        ),
        immutable=True,
        data={TRUST_KEY: bundle.decode("ascii")},
    )


def _restricted(uid: int) -> V1SecurityContext:
    """A non-root container with nothing extra: no privileges, no capabilities, read-only."""
    return V1SecurityContext(
        run_as_user=uid,
        run_as_group=uid,
        run_as_non_root=True,
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def _egress_container(options: PodOptions) -> V1Container:
    return V1Container(
        name=EGRESS_CONTAINER,
        image=vault_image(options),
        image_pull_policy="IfNotPresent",
        command=["/bin/sh", "-c"],
        args=[EGRESS_SCRIPT],
        security_context=V1SecurityContext(
            run_as_user=0,
            run_as_group=0,
            run_as_non_root=False,
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            capabilities=V1Capabilities(drop=["ALL"], add=["NET_ADMIN"]),
            seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
        ),
        resources=V1ResourceRequirements(
            requests={"cpu": "10m", "memory": "16Mi"}, limits={"cpu": "100m", "memory": "64Mi"}
        ),
    )


def _vault_container(options: PodOptions, spec: SandboxSpec, has_upstream_ca: bool) -> V1Container:
    args = [
        *("--proxy", f"127.0.0.1:{VAULT_PROXY_PORT}"),
        *("--control", f"tcp:0.0.0.0:{VAULT_CONTROL_PORT}"),
        *("--state-dir", VAULT_DIR),
        *("--sandbox-id", spec.sandbox_id),
    ]
    if has_upstream_ca:
        args += ["--upstream-ca", f"{VAULT_DIR}/{UPSTREAM_CA_FILE}"]
    health = V1HTTPGetAction(path="/healthz", port=VAULT_CONTROL_PORT)
    return V1Container(
        name=VAULT_CONTAINER,
        image=vault_image(options),
        image_pull_policy="IfNotPresent",
        # A native sidecar: started before the runner, kept running (and restarted) beside it.
        restart_policy="Always",
        command=["python3", "-m", "sidecar"],
        args=args,
        env=[V1EnvVar(name="HOME", value=CONTAINER_TMP), V1EnvVar(name="LANG", value="C.UTF-8")],
        ports=[
            V1ContainerPort(name="vault-control", container_port=VAULT_CONTROL_PORT, protocol="TCP")
        ],
        startup_probe=V1Probe(http_get=health, period_seconds=1, failure_threshold=120),
        readiness_probe=V1Probe(http_get=health, period_seconds=10, failure_threshold=3),
        security_context=_restricted(VAULT_UID),
        resources=V1ResourceRequirements(
            requests={"cpu": "50m", "memory": "96Mi"}, limits={"cpu": "1", "memory": "256Mi"}
        ),
        volume_mounts=[
            V1VolumeMount(name="vault-secret", mount_path=VAULT_DIR, read_only=True),
            V1VolumeMount(name="vault-tmp", mount_path=CONTAINER_TMP),
        ],
    )


def _runner_container(options: PodOptions, spec: SandboxSpec) -> V1Container:
    cpu = f"{max(1, round(spec.resources.cpus * 1000))}m"
    memory = f"{spec.resources.memory_mb}Mi"
    token = V1EnvVarSource(
        secret_key_ref=V1SecretKeySelector(
            name=object_name(spec.sandbox_id), key=RUNNER_TOKEN_KEY, optional=False
        )
    )
    return V1Container(
        name=RUNNER_CONTAINER,
        image=harness_image(options, spec.harness),
        image_pull_policy="IfNotPresent",
        command=["python3", "-m", "sandboxes.runner"],
        args=[
            *("--listen", f"tcp:0.0.0.0:{RUNNER_PORT}"),
            *("--recording", f"{RUN_DIR}/recording.cast"),
        ],
        working_dir="/work",
        env=[
            V1EnvVar(name="LAP_RUNNER_TOKEN", value_from=token),
            V1EnvVar(name="HOME", value="/work"),
            V1EnvVar(name="TMPDIR", value=CONTAINER_TMP),
            V1EnvVar(name="LANG", value="C.UTF-8"),
        ],
        ports=[V1ContainerPort(name="runner", container_port=RUNNER_PORT, protocol="TCP")],
        readiness_probe=V1Probe(
            tcp_socket=V1TCPSocketAction(port=RUNNER_PORT), period_seconds=1, failure_threshold=3
        ),
        security_context=_restricted(RUNNER_UID),
        resources=V1ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits={"cpu": cpu, "memory": memory}
        ),
        volume_mounts=[
            V1VolumeMount(name="work", mount_path="/work"),
            V1VolumeMount(name="tmp", mount_path=CONTAINER_TMP),
            V1VolumeMount(name="run", mount_path=RUN_DIR),
            V1VolumeMount(name="trust", mount_path=TRUST_DIR, read_only=True),
        ],
    )


def pod_manifest(
    options: PodOptions, spec: SandboxSpec, *, trust_config_map: str, has_upstream_ca: bool
) -> V1Pod:
    """The sandbox's Pod (see the module docstring for what each part is for)."""
    name = object_name(spec.sandbox_id)
    vault_files = [VAULT_KEY_FILE, VAULT_CA_FILE]
    if has_upstream_ca:
        vault_files.append(UPSTREAM_CA_FILE)
    volumes = [
        V1Volume(
            name="vault-secret",
            secret=V1SecretVolumeSource(
                secret_name=name,
                # Group-readable through fsGroup by the vault's uid only: the runner token
                # (also in the Secret) is not among the files.
                items=[V1KeyToPath(key=key, path=key) for key in vault_files],
                default_mode=0o440,
                optional=False,
            ),
        ),
        V1Volume(name="vault-tmp", empty_dir=V1EmptyDirVolumeSource(medium="Memory")),
        V1Volume(name="work", empty_dir=V1EmptyDirVolumeSource()),
        V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource()),
        V1Volume(name="run", empty_dir=V1EmptyDirVolumeSource(medium="Memory")),
        V1Volume(
            name="trust",
            config_map=V1ConfigMapVolumeSource(name=trust_config_map, default_mode=0o444),
        ),
    ]
    priority = options.priority_class_warm if is_warm(spec) else options.priority_class_active
    return V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=V1ObjectMeta(
            name=name, namespace=options.namespace, labels=sandbox_labels(options, spec)
        ),
        spec=V1PodSpec(
            restart_policy="Never",
            automount_service_account_token=False,
            enable_service_links=False,
            share_process_namespace=False,
            host_network=False,
            host_pid=False,
            host_ipc=False,
            termination_grace_period_seconds=TERMINATION_GRACE,
            priority_class_name=priority or None,
            runtime_class_name=options.runtime_class or None,
            node_selector=dict(options.node_selector) or None,
            security_context=V1PodSecurityContext(
                fs_group=VAULT_UID,
                fs_group_change_policy="OnRootMismatch",
                seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
            ),
            init_containers=[
                _egress_container(options),
                _vault_container(options, spec, has_upstream_ca),
            ],
            containers=[_runner_container(options, spec)],
            volumes=volumes,
        ),
    )


def _ports(*numbers: int, protocol: str = "TCP") -> list[V1NetworkPolicyPort]:
    return [V1NetworkPolicyPort(port=number, protocol=protocol) for number in numbers]


def network_policy(options: PodOptions) -> V1NetworkPolicy:
    """The namespace's policy for every LAP sandbox pod (ensure-exists by the driver)."""
    platform_pods = V1LabelSelector(
        match_labels={LABEL_NAME: PLATFORM_NAME},
        match_expressions=[
            V1LabelSelectorRequirement(
                key=LABEL_COMPONENT, operator="In", values=list(PLATFORM_COMPONENTS)
            )
        ],
    )
    namespaces = V1LabelSelector(
        match_labels={"kubernetes.io/metadata.name": options.platform_namespace}
        if options.platform_namespace
        else None
    )
    sources = [V1NetworkPolicyPeer(namespace_selector=namespaces, pod_selector=platform_pods)]
    sources += [V1NetworkPolicyPeer(ip_block=V1IPBlock(cidr=c)) for c in options.ingress_cidrs]
    outside = [
        V1NetworkPolicyPeer(ip_block=V1IPBlock(cidr="0.0.0.0/0", _except=list(PRIVATE_V4))),
        V1NetworkPolicyPeer(ip_block=V1IPBlock(cidr="::/0", _except=list(PRIVATE_V6))),
    ]
    return V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=V1ObjectMeta(
            name=NETWORK_POLICY, namespace=options.namespace, labels={LABEL_MANAGED_BY: MANAGED_BY}
        ),
        spec=V1NetworkPolicySpec(
            pod_selector=V1LabelSelector(match_labels={LABEL_MANAGED_BY: MANAGED_BY}),
            policy_types=["Ingress", "Egress"],
            ingress=[
                V1NetworkPolicyIngressRule(
                    _from=sources, ports=_ports(RUNNER_PORT, VAULT_CONTROL_PORT)
                )
            ],
            egress=[
                V1NetworkPolicyEgressRule(ports=[*_ports(53, protocol="UDP"), *_ports(53)]),
                V1NetworkPolicyEgressRule(to=outside, ports=_ports(80, 443)),
            ],
        ),
    )
