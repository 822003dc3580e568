"""The Kubernetes driver: every sandbox is a Pod, made with the official ``kubernetes`` client.

The objects are built in ``kube_manifests`` and their status read in ``kube_status``; this
module only talks to the API server (``docs/kubernetes.md``):

- ``create`` ensures the namespace's NetworkPolicy and the trust-bundle ConfigMap, then makes
  the sandbox's Secret, then its Pod, then sets the Pod as the Secret's owner. Secret first,
  so the kubelet never starts the Pod before its Secret exists (a missing Secret costs a
  mount retry with back-off); the owner reference is added once the Pod has a uid, so deleting
  the Pod deletes the Secret. If the platform dies between the steps, ``list`` reports the
  Secret without a Pod as an incomplete sandbox and reconcile destroys it. Idempotent: an
  existing Pod of the same sandbox is returned.
- ``wait_ready`` watches the Pod (a watch from the read's resourceVersion, re-read on 410 Gone)
  until it is Ready (the vault's startup probe passed, the runner's readiness probe too), and
  fails at once with the Kubernetes reason when it will not get there (``ImagePullBackOff:
  …``, ``0/3 nodes are available: …`` past the unschedulable grace, an init container that
  failed, the Pod deleted).
- ``endpoints`` are the Pod IP and the runner and vault control ports: the platform must reach
  the pod network (it runs in the cluster; out of it, see the docs' port-forward notes).
- ``destroy`` deletes the Pod and the Secret (either may already be gone).
- ``list`` returns every sandbox Pod of this deployment (``app.kubernetes.io/instance``) with
  its ``lap.*`` labels and state, plus Secrets left without a Pod.

Kube config: ``kubeconfig_b64`` when given, else the in-cluster service account, else
``KUBECONFIG`` or ``~/.kube/config``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import urllib3
import yaml
from kubernetes import client, config, watch
from kubernetes.client import ApiException, V1Pod

from . import kube_manifests as manifests
from .base import (
    LABEL_SANDBOX,
    SANDBOX_ENV,
    DriverError,
    DriverUnavailable,
    Endpoints,
    SandboxHandle,
    SandboxInfo,
    SandboxSpec,
)
from .kube_status import PodState, pod_state

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)
MERGE_PATCH = "application/merge-patch+json"
VAULT_FILES = (manifests.VAULT_KEY_FILE, manifests.VAULT_CA_FILE, manifests.TRUST_KEY)
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


def load_configuration(kubeconfig_b64: str = "") -> tuple[client.Configuration, str | None]:
    """The client configuration and, in the cluster, the platform's own namespace.

    ``DriverUnavailable`` when there is no usable configuration at all.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig_b64:
            document = yaml.safe_load(base64.b64decode(kubeconfig_b64, validate=True))
            config.load_kube_config_from_dict(document, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            return configuration, SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
        else:
            # The client reads KUBECONFIG once, at import: read it now.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
    except (config.ConfigException, binascii.Error, yaml.YAMLError, OSError, TypeError) as exc:
        # The message names the file or the problem, never a credential.
        raise DriverUnavailable(f"no usable Kubernetes configuration: {exc}") from exc
    return configuration, None


@contextlib.contextmanager
def _api_errors(action: str, *, missing_ok: bool = False) -> Iterator[None]:
    """Turn the client's failures into ``DriverError`` (retryable when trying again may help)."""
    try:
        yield
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return
        raise DriverError(
            f"kubernetes: {action} failed: {exc.status} {_api_message(exc)}",
            retryable=exc.status in RETRYABLE_STATUSES,
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise DriverError(
            f"kubernetes: {action} failed: API server unreachable ({type(exc).__name__})",
            retryable=True,
        ) from exc


def _api_message(exc: ApiException) -> str:
    """The ``message`` of the Status body the API server answered with, else the reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(yaml.safe_load(exc.body)["message"])
    return str(exc.reason or "")


class KubernetesDriver:
    """Sandboxes as Pods in one namespace (see the module docstring).

    Options mirror the ``LAP_K8S_*`` settings; ``upstream_ca`` is a PEM file the vaults trust
    for upstreams besides the system CAs; ``api_client`` replaces the one built from the kube
    config (tests).
    """

    name = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str = "lap-sandboxes",
        instance: str = "lap",
        image_registry: str = "lap",
        image_tag: str = "0.1.0",
        runtime_class: str = "",
        node_selector: Mapping[str, str] | None = None,
        priority_class_active: str = "lap-sandbox-active",
        priority_class_warm: str = "lap-sandbox-warm",
        ingress_cidrs: tuple[str, ...] = (),
        kubeconfig_b64: str = "",
        upstream_ca: str | None = None,
        unschedulable_grace: float = 120.0,
        api_client: client.ApiClient | None = None,
    ) -> None:
        self.options = manifests.PodOptions(
            namespace=namespace,
            instance=instance,
            image_registry=image_registry,
            image_tag=image_tag,
            runtime_class=runtime_class,
            node_selector=dict(node_selector or {}),
            priority_class_active=priority_class_active,
            priority_class_warm=priority_class_warm,
            ingress_cidrs=tuple(ingress_cidrs),
        )
        self.kubeconfig_b64 = kubeconfig_b64
        self.upstream_ca = upstream_ca
        self.unschedulable_grace = unschedulable_grace
        self._api_client = api_client
        self._policy_ensured = False
        self._trust_maps: set[str] = set()
        self._pod_ips: dict[str, str] = {}

    @staticmethod
    def sandbox_env() -> dict[str, str]:
        """The vault proxy on the pod's loopback and the trust bundle the ConfigMap mounts."""
        return dict(SANDBOX_ENV)

    # --- the API ---------------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    @property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self._client())

    def _client(self) -> client.ApiClient:
        if self._api_client is None:
            configuration, platform_namespace = load_configuration(self.kubeconfig_b64)
            if platform_namespace:
                self.options = dataclasses.replace(
                    self.options, platform_namespace=platform_namespace
                )
            self._api_client = client.ApiClient(configuration)
        return self._api_client

    # --- the driver contract -----------------------------------------------------------

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Make the sandbox's Secret and Pod (see the module docstring); idempotent."""
        name = self._name(spec.sandbox_id)
        missing = [f for f in VAULT_FILES if f not in spec.vault_material]
        if missing:
            raise DriverError(f"the vault's key material lacks {', '.join(missing)}")
        upstream_ca = Path(self.upstream_ca).read_bytes() if self.upstream_ca else None
        namespace = self.options.namespace
        self._ensure_network_policy()
        trust = self._ensure_trust(spec.vault_material[manifests.TRUST_KEY])
        secret = manifests.secret_manifest(self.options, spec, upstream_ca)
        with _api_errors("creating the sandbox's Secret"):
            try:
                self.core.create_namespaced_secret(
                    namespace, secret, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 409:  # left by an earlier attempt: the same material
                    raise
        pod = manifests.pod_manifest(
            self.options, spec, trust_config_map=trust, has_upstream_ca=upstream_ca is not None
        )
        with _api_errors("creating the sandbox's Pod"):
            try:
                created = self.core.create_namespaced_pod(
                    namespace, pod, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                created = self.core.read_namespaced_pod(
                    name, namespace, _request_timeout=REQUEST_TIMEOUT
                )
        with _api_errors("making the Pod own its Secret"):
            self.core.patch_namespaced_secret(
                name,
                namespace,
                manifests.owner_patch(created),
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return SandboxHandle(spec.sandbox_id, self.name, name)

    def wait_ready(self, handle: SandboxHandle, timeout: float) -> None:
        """Watch the Pod until it is Ready; ``DriverError`` with the Kubernetes reason if it
        ends, is deleted, stays stuck (see ``kube_status``) or ``timeout`` passes."""
        name = self._name(handle.sandbox_id)
        deadline = time.monotonic() + timeout
        pod = self._read_pod(name)
        while True:
            if pod is None:
                raise DriverError(f"sandbox pod {name} was deleted before it was ready")
            verdict = self._verdict(pod)
            if verdict.ready:
                self._remember_ip(handle.sandbox_id, pod)
                return
            if verdict.state == "exited":
                raise DriverError(f"sandbox pod {name} ended before it was ready: {verdict.reason}")
            if verdict.fatal:
                raise DriverError(verdict.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = verdict.reason or self._last_warning(name) or "no reason reported"
                raise DriverError(
                    f"sandbox pod {name} not ready after {timeout:g}s: {why}", retryable=True
                )
            if verdict.reason:  # unschedulable: look again when the grace is over
                remaining = min(remaining, max(1.0, self.unschedulable_grace))
            pod = self._watch_change(pod, remaining)

    def endpoints(self, handle: SandboxHandle) -> Endpoints:
        """``http://<pod IP>:7681`` (runner) and ``http://<pod IP>:3129`` (vault control)."""
        address = self._pod_ips.get(handle.sandbox_id)
        if address is None:
            pod = self._read_pod(self._name(handle.sandbox_id))
            if pod is None or pod.status is None or not pod.status.pod_ip:
                raise DriverError(f"sandbox {handle.sandbox_id} has no pod IP")
            address = self._remember_ip(handle.sandbox_id, pod)
        host = f"[{address}]" if ":" in address else address
        return Endpoints(
            runner_url=f"http://{host}:{manifests.RUNNER_PORT}",
            vault_url=f"http://{host}:{manifests.VAULT_CONTROL_PORT}",
        )

    def vault_restart(self, handle: SandboxHandle) -> bool:
        """False: the vault is a native sidecar, the kubelet restarts it (reconcile then
        pushes its bundle again)."""
        return False

    def destroy(self, handle: SandboxHandle) -> None:
        """Delete the sandbox's Pod (its containers stop) and Secret; idempotent."""
        name = self._name(handle.sandbox_id)
        namespace = self.options.namespace
        self._pod_ips.pop(handle.sandbox_id, None)
        with _api_errors("deleting the sandbox's Pod", missing_ok=True):
            self.core.delete_namespaced_pod(
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        with _api_errors("deleting the sandbox's Secret", missing_ok=True):
            self.core.delete_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT)

    def list(self) -> list[SandboxInfo]:
        """Every sandbox Pod of this deployment, and Secrets whose Pod is gone (``exited``,
        reason ``incomplete``). A pending Pod has a reason only once it is stuck for good;
        Pods being deleted are left out: they are on their way out already."""
        selector = manifests.label_selector(manifests.selector_labels(self.options))
        namespace = self.options.namespace
        with _api_errors("listing sandbox pods"):
            pods = self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ).items
            secrets = self.core.list_namespaced_secret(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ).items
        infos: dict[str, SandboxInfo] = {}
        leaving: set[str] = set()
        for pod in pods:
            labels = _lap_labels(pod.metadata.labels if pod.metadata else None)
            sandbox_id = labels.get(LABEL_SANDBOX)
            if not sandbox_id or pod.metadata is None or not pod.metadata.name:
                continue
            if pod.metadata.deletion_timestamp is not None:
                leaving.add(sandbox_id)
                continue
            verdict = self._verdict(pod)
            reason = verdict.reason if verdict.state != "pending" or verdict.fatal else ""
            handle = SandboxHandle(sandbox_id, self.name, pod.metadata.name)
            infos[sandbox_id] = SandboxInfo(handle, labels, verdict.state, reason)
        for secret in secrets:
            labels = _lap_labels(secret.metadata.labels if secret.metadata else None)
            sandbox_id = labels.get(LABEL_SANDBOX)
            if not sandbox_id or sandbox_id in infos or sandbox_id in leaving:
                continue
            name = secret.metadata.name if secret.metadata else ""
            handle = SandboxHandle(sandbox_id, self.name, name or "")
            infos[sandbox_id] = SandboxInfo(handle, labels, "exited", "incomplete")
        return list(infos.values())

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _name(sandbox_id: str) -> str:
        try:
            return manifests.object_name(sandbox_id)
        except manifests.InvalidSandboxId as exc:
            raise DriverError(str(exc)) from exc

    def _verdict(self, pod: V1Pod) -> PodState:
        return pod_state(pod, datetime.datetime.now(datetime.UTC), self.unschedulable_grace)

    def _remember_ip(self, sandbox_id: str, pod: V1Pod) -> str:
        address = pod.status.pod_ip if pod.status else None
        if not address:
            raise DriverError(f"sandbox {sandbox_id} is ready but has no pod IP")
        self._pod_ips[sandbox_id] = address
        return address

    def _read_pod(self, name: str) -> V1Pod | None:
        with _api_errors(f"reading pod {name}"):
            try:
                return self.core.read_namespaced_pod(
                    name, self.options.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _watch_change(self, pod: V1Pod, seconds: float) -> V1Pod | None:
        """The Pod after its next change (None once deleted), or as it is after ``seconds``.

        Watches from the Pod's resourceVersion; when that is too old (410 Gone) it reads the
        Pod again instead.
        """
        assert pod.metadata is not None and pod.metadata.name
        name = pod.metadata.name
        stream = watch.Watch()
        budget = max(1, int(seconds))
        with _api_errors(f"watching pod {name}"):
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod,
                    self.options.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=pod.metadata.resource_version,
                    timeout_seconds=budget,
                    _request_timeout=(REQUEST_TIMEOUT[0], budget + 10),
                ):
                    stream.stop()
                    if event["type"] == "DELETED":
                        return None
                    changed: V1Pod = event["object"]
                    return changed
            except ApiException as exc:
                if exc.status != 410:
                    raise
        return self._read_pod(name)

    def _last_warning(self, name: str) -> str:
        """The newest Warning event about the Pod (``FailedMount: …``), or ``""``."""
        with contextlib.suppress(DriverError), _api_errors(f"reading events of pod {name}"):
            events = self.core.list_namespaced_event(
                self.options.namespace,
                field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
                _request_timeout=REQUEST_TIMEOUT,
            ).items
            warnings = [event for event in events if event.type == "Warning"]
            if warnings:
                newest = warnings[-1]
                return _with_reason(newest.reason, newest.message)
        return ""

    def _ensure_network_policy(self) -> None:
        """Create the namespace's NetworkPolicy, or bring an outdated one up to date."""
        if self._policy_ensured:
            return
        api = self.networking  # loads the config first: the policy names the platform namespace
        wanted = manifests.network_policy(self.options)
        namespace = self.options.namespace
        with _api_errors("ensuring the sandboxes' NetworkPolicy"):
            try:
                api.create_namespaced_network_policy(
                    namespace, wanted, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = api.read_namespaced_network_policy(
                    manifests.NETWORK_POLICY, namespace, _request_timeout=REQUEST_TIMEOUT
                )
                serialize: Callable[[object], object] = self._client().sanitize_for_serialization
                if serialize(current.spec) != serialize(wanted.spec):
                    assert wanted.metadata is not None and current.metadata is not None
                    wanted.metadata.resource_version = current.metadata.resource_version
                    api.replace_namespaced_network_policy(
                        manifests.NETWORK_POLICY,
                        namespace,
                        wanted,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
        self._policy_ensured = True

    def _ensure_trust(self, bundle: bytes) -> str:
        """The name of the ConfigMap holding ``bundle``, created if it does not exist yet."""
        config_map = manifests.trust_config_map(self.options, bundle)
        assert config_map.metadata is not None and config_map.metadata.name
        name = config_map.metadata.name
        if name in self._trust_maps:
            return name
        with _api_errors("creating the trust-bundle ConfigMap"):
            try:
                self.core.create_namespaced_config_map(
                    self.options.namespace, config_map, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 409:  # content-addressed and immutable: the same bundle
                    raise
        self._trust_maps.add(name)
        return name


def _lap_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    return {key: value for key, value in (labels or {}).items() if key.startswith("lap.")}


def _with_reason(reason: str | None, message: str | None) -> str:
    return ": ".join(part for part in (reason, message) if part)
