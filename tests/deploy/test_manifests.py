"""The kustomize base and overlays: valid Kubernetes objects, and the properties that matter.

Every rendered object is validated offline against the Kubernetes OpenAPI schemas that
``kubernetes-validate`` ships (strict: unknown fields are errors), for the oldest Kubernetes
LAP supports (1.29: native sidecars on by default) and the kind node's (1.37).
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml
from django.test import Client

from tests.deploy.manifests import (
    DEPLOY,
    OVERLAYS,
    PLATFORM_NAMESPACE,
    RENDERED,
    ROOT,
    SANDBOX_NAMESPACE,
    config,
    containers,
    named,
    of_kind,
    render,
    where,
    workloads,
)

KUBERNETES_VERSIONS = ("1.29", "1.37")
CLUSTER_SCOPED = {"Namespace", "PriorityClass"}
# What the Kubernetes driver needs in the sandbox namespace, and nothing more
# (deploy/README.md, RBAC).
DRIVER = ROOT / "sandboxes" / "drivers" / "kubernetes.py"
VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch"}
VERBS["replace"] = "update"
RESOURCES = {
    "pod": ("", "pods"),
    "secret": ("", "secrets"),
    "config_map": ("", "configmaps"),
    "event": ("", "events"),
    "network_policy": ("networking.k8s.io", "networkpolicies"),
}


def driver_needs() -> dict[tuple[str, str], set[str]]:
    """(API group, resource) → verbs, from the Kubernetes API calls the driver's code makes: a
    watch is a list call handed to ``watch.Watch().stream``."""
    source = DRIVER.read_text()
    needs: dict[tuple[str, str], set[str]] = {}
    for verb, kind in re.findall(
        r"\.(create|read|list|delete|patch|replace)_namespaced_(\w+)", source
    ):
        needs.setdefault(RESOURCES[kind], set()).add(VERBS[verb])
    for kind in re.findall(r"\.stream\(\s*self\.\w+\.list_namespaced_(\w+)", source):
        needs[RESOURCES[kind]].add("watch")
    return needs


def test_the_driver_needs_are_read_from_its_code():
    """Guards the Role test below: the parse finds the calls it must."""
    needs = driver_needs()
    assert {"create", "get", "list", "watch", "delete"} <= needs[("", "pods")]
    assert "create" in needs[("", "secrets")]


def test_the_validator_rejects_what_kubernetes_would():
    """Guards the test below against passing vacuously."""
    web = named(render("base"), "Deployment", "lap-web")
    broken = {**web, "spec": {**web["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", RENDERED)
def test_every_object_matches_the_kubernetes_schema(path, version):
    for doc in render(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path}: {where(doc)} at {list(error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{path}: {where(doc)}: {error.message}")


@pytest.mark.parametrize("path", RENDERED)
def test_every_namespaced_object_names_its_namespace(path):
    for doc in render(path):
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert namespace is None, where(doc)
        else:
            assert namespace in (PLATFORM_NAMESPACE, SANDBOX_NAMESPACE), where(doc)


@pytest.mark.parametrize("path", RENDERED)
def test_every_pod_runs_non_root_without_privileges(path):
    for workload in workloads(render(path)):
        pod = workload["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where(workload)
        assert context["runAsUser"] > 0, where(workload)
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where(workload)
        for container in containers(pod):
            at = f"{where(workload)} {container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, at
            assert security["readOnlyRootFilesystem"] is True, at
            assert security["capabilities"] == {"drop": ["ALL"]}, at
            assert "privileged" not in security, at
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, at
            assert "memory" in container["resources"]["limits"], at
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), at


@pytest.mark.parametrize("path", RENDERED)
def test_only_web_and_worker_get_an_api_token(path):
    docs = render(path)
    (account,) = of_kind(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        wants_token = component in ("web", "worker")
        assert pod["automountServiceAccountToken"] is wants_token, where(workload)


@pytest.mark.parametrize("path", RENDERED)
def test_platform_pods_carry_the_agreed_labels(path):
    docs = render(path)
    for name, component in (("lap-web", "web"), ("lap-worker", "worker")):
        template = named(docs, "Deployment", name)["spec"]["template"]
        assert template["metadata"]["labels"] == {
            "app.kubernetes.io/name": "lap",
            "app.kubernetes.io/component": component,
        }
        assert template["spec"]["serviceAccountName"] == "lap"


@pytest.mark.parametrize("path", RENDERED)
def test_web_is_probed_on_healthz_with_an_allowed_host(path):
    docs = render(path)
    allowed = config(docs)["DJANGO_ALLOWED_HOSTS"].split(",")
    (web,) = named(docs, "Deployment", "lap-web")["spec"]["template"]["spec"]["containers"]
    assert web["ports"] == [{"name": "http", "containerPort": 8000}]
    assert "--no-worker" in web["command"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = web[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/healthz", "http"), probe
        (host,) = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
        assert host in allowed, f"{probe}: Django answers Host {host!r} with 400"


@pytest.mark.django_db
def test_healthz_needs_the_probe_host_header(settings):
    """Why the probes send a Host header: Django refuses the kubelet's ``<pod IP>:8000``."""
    settings.ALLOWED_HOSTS = config(render("base"))["DJANGO_ALLOWED_HOSTS"].split(",")
    client = Client()
    assert client.get("/healthz", headers={"host": "10.244.0.7:8000"}).status_code == 400
    assert client.get("/healthz", headers={"host": "localhost"}).status_code == 200


@pytest.mark.parametrize("path", RENDERED)
def test_worker_runs_the_task_cluster_and_pods_wait_for_migrations(path):
    docs = render(path)
    (worker,) = named(docs, "Deployment", "lap-worker")["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == ["python", "manage.py", "qcluster"]
    (migrate,) = named(docs, "Job", "lap-migrate")["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--no-input"]
    for name in ("lap-web", "lap-worker"):
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert wait["command"] == ["python", "manage.py", "migrate", "--check"]
        assert wait["image"] == migrate["image"]


@pytest.mark.parametrize("path", RENDERED)
def test_the_sandbox_role_grants_exactly_the_least_verbs(path):
    docs = render(path)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    (role,) = of_kind(docs, "Role")
    assert role["metadata"]["namespace"] == SANDBOX_NAMESPACE
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == driver_needs()
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lap", "namespace": PLATFORM_NAMESPACE}
    ]


@pytest.mark.parametrize("path", RENDERED)
def test_priority_classes_rank_the_platform_above_sandboxes_claimed_or_not(path):
    """A session may run in a claimed warm pod, whose class cannot change: warm must not rank
    below active, or the next session's pod could preempt a session in use."""
    docs = render(path)
    settings = config(docs)
    classes = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "PriorityClass")}
    platform = classes["lap-platform"]
    active = classes[settings["LAP_K8S_PRIORITY_CLASS_ACTIVE"]]
    warm = classes[settings["LAP_K8S_PRIORITY_CLASS_WARM"]]
    assert platform["value"] > active["value"] == warm["value"] > 0
    assert warm["preemptionPolicy"] == "Never"
    assert active["preemptionPolicy"] == "PreemptLowerPriority"
    assert not any(doc["globalDefault"] for doc in classes.values())
    for workload in workloads(docs):
        assert workload["spec"]["template"]["spec"]["priorityClassName"] == "lap-platform"


@pytest.mark.parametrize("path", RENDERED)
def test_settings_match_the_objects_they_name(path):
    docs = render(path)
    settings = config(docs)
    assert settings["LAP_SANDBOX_DRIVER"] == "kubernetes"
    namespaces = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Namespace")}
    assert settings["LAP_K8S_NAMESPACE"] == SANDBOX_NAMESPACE
    assert set(namespaces) == {PLATFORM_NAMESPACE, SANDBOX_NAMESPACE}
    pod_security = "pod-security.kubernetes.io/enforce"
    assert namespaces[PLATFORM_NAMESPACE]["metadata"]["labels"][pod_security] == "restricted"
    # The platform image is the one the driver's settings would name for "platform".
    registry, tag = settings["LAP_K8S_IMAGE_REGISTRY"], settings["LAP_K8S_IMAGE_TAG"]
    for workload in workloads(docs):
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] in ("postgres", "redis"):
            continue
        for container in containers(workload["spec"]["template"]["spec"]):
            assert container["image"] == f"{registry}/platform:{tag}", where(workload)


@pytest.mark.parametrize("path", RENDERED)
def test_keys_come_from_secrets_not_from_git(path):
    docs = render(path)
    assert not of_kind(docs, "Secret")
    keys = {"LAP_MASTER_KEY", "DJANGO_SECRET_KEY", "LAP_ENCRYPTION_KEYS", "LITELLM_API_KEY"}
    assert not keys & set(config(docs)), "keys belong in the Secret lap-keys"
    for workload in workloads(docs):
        for container in containers(workload["spec"]["template"]["spec"]):
            if container["image"].startswith(("postgres:", "redis:")):
                continue
            sources = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
            assert sources == ["lap-keys", "lap-database"], where(workload)


@pytest.mark.parametrize("path", ["base", "overlays/bundled", "overlays/external"])
def test_the_ingress_keeps_terminals_open_for_an_hour(path):
    ingress = named(render(path), "Ingress", "lap-web")
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    (rule,) = ingress["spec"]["rules"]
    (route,) = rule["http"]["paths"]
    assert route["backend"]["service"] == {"name": "lap-web", "port": {"name": "http"}}


def test_bundled_datastores_answer_only_the_platform():
    docs = render("overlays/bundled")
    assert {s["metadata"]["name"] for s in of_kind(docs, "StatefulSet")} == {
        "lap-postgres",
        "lap-redis",
    }
    (policy,) = of_kind(docs, "NetworkPolicy")
    (selector,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert set(selector["values"]) == {"postgres", "redis"}
    (allowed,) = policy["spec"]["ingress"]
    (source,) = allowed["from"]
    expressions = {e["key"]: e for e in source["podSelector"]["matchExpressions"]}
    components = set(expressions["app.kubernetes.io/component"]["values"])
    assert components == {"web", "worker", "migrate"}


def test_external_autoscales_web_and_leaves_it_the_replica_count():
    docs = render("overlays/external")
    assert not of_kind(docs, "StatefulSet")
    (autoscaler,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "lap-web"
    assert "replicas" not in named(docs, "Deployment", "lap-web")["spec"]


def test_kind_serves_on_the_port_its_cluster_publishes():
    docs = render("overlays/kind")
    assert not of_kind(docs, "Ingress")
    service = named(docs, "Service", "lap-web")
    (port,) = service["spec"]["ports"]
    cluster = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    (node,) = cluster["nodes"]
    (mapping,) = node["extraPortMappings"]
    assert (service["spec"]["type"], port["nodePort"]) == ("NodePort", mapping["containerPort"])
    assert mapping["hostPort"] == 8000 and mapping["listenAddress"] == "127.0.0.1"
    assert "@sha256:" in node["image"]
    allowed = config(docs)["DJANGO_ALLOWED_HOSTS"].split(",")
    assert "127.0.0.1" in allowed
    state = named(docs, "PersistentVolumeClaim", "lap-state")
    assert state["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_and_worker_share_the_state_volume(overlay):
    docs = render(f"overlays/{overlay}")
    for name in ("lap-web", "lap-worker"):
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
        assert state["persistentVolumeClaim"] == {"claimName": "lap-state"}
