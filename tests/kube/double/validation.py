"""Validation the API server double applies to request bodies, as the real one would.

First the shape: the body must deserialise into the ``kubernetes`` client's own model for the
resource (strict pydantic models: unknown fields and wrong types are refused). Then the
semantics the real API server checks for the fields LAP uses: names, labels, containers,
volumes and mounts, ports, probes, env, resources, Secret data, NetworkPolicy CIDRs. Failures
become ``422 Invalid`` with one cause per problem.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient

from .store import ApiError, Obj


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    list_kind: str
    model: str


KINDS = {
    "pods": Kind("v1", "Pod", "PodList", "V1Pod"),
    "secrets": Kind("v1", "Secret", "SecretList", "V1Secret"),
    "configmaps": Kind("v1", "ConfigMap", "ConfigMapList", "V1ConfigMap"),
    "events": Kind("v1", "Event", "EventList", "CoreV1Event"),
    "namespaces": Kind("v1", "Namespace", "NamespaceList", "V1Namespace"),
    "networkpolicies": Kind(
        "networking.k8s.io/v1", "NetworkPolicy", "NetworkPolicyList", "V1NetworkPolicy"
    ),
}

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
QUANTITY = re.compile(r"(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?")
SUFFIXES = {
    None: 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
VOLUME_SOURCES = ("emptyDir", "secret", "configMap")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


def quantity(text: str) -> float:
    """A resource quantity (``500m``, ``2``, ``96Mi``) as a number; ``ValueError`` if bad."""
    match = QUANTITY.fullmatch(str(text))
    if match is None:
        raise ValueError(f"quantities must match the regular expression {QUANTITY.pattern}")
    return float(match["number"]) * SUFFIXES[match["suffix"]]


class Causes:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_if_any(self, kind: Kind, name: str) -> None:
        if not self.items:
            return
        text = ", ".join(f"{field}: {message}" for field, message in self.items)
        raise ApiError(
            422,
            "Invalid",
            f'{kind.kind} "{name}" is invalid: {text}',
            name=name,
            kind=kind.kind,
            causes=[
                {"reason": "FieldValueInvalid", "message": message, "field": field}
                for field, message in self.items
            ],
        )


def parse_body(raw: bytes) -> Obj:
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


def check_model(resource: str, obj: Obj) -> None:
    """The body as the client's model: 422 when it does not deserialise."""
    kind = KINDS[resource]
    if (
        obj.get("kind", kind.kind) != kind.kind
        or obj.get("apiVersion", kind.api_version) != kind.api_version
    ):
        raise ApiError(
            400,
            "BadRequest",
            f"the body is {obj.get('apiVersion')}/{obj.get('kind')}, "
            f"this endpoint takes {kind.api_version}/{kind.kind}",
        )
    check_model_named(kind.model, obj, kind.kind)


def check_model_named(model: str, obj: Obj, kind: str = "") -> None:
    """``obj`` must deserialise into the client model ``model`` with no field left over
    (strict field validation, as ``kubectl`` asks for); 422 otherwise."""
    client = ApiClient()
    name = (obj.get("metadata") or {}).get("name", "")
    try:
        parsed = client.deserialize(json.dumps(obj), model, "application/json")
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise ApiError(
            422,
            "Invalid",
            f'{kind or model} "{name}" is invalid: {" ".join(first[:3])}',
            name=name,
            kind=kind or model,
        ) from exc
    # The models drop keys they do not know: what did not survive the round trip is unknown.
    unknown = _unknown_fields(obj, client.sanitize_for_serialization(parsed), "")
    if unknown:
        raise ApiError(
            422,
            "Invalid",
            f'{kind or model} "{name}" is invalid: strict decoding error: '
            + ", ".join(f'unknown field "{field}"' for field in unknown),
            name=name,
            kind=kind or model,
        )


def _unknown_fields(sent: Any, kept: Any, path: str) -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        found = []
        for key, value in sent.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                if value is not None:
                    found.append(where)
            else:
                found += _unknown_fields(value, kept[key], where)
        return found
    if isinstance(sent, list) and isinstance(kept, list):
        return [
            field
            for index, (a, b) in enumerate(zip(sent, kept, strict=False))
            for field in _unknown_fields(a, b, f"{path}[{index}]")
        ]
    return []


def _labels(causes: Causes, labels: dict[str, Any], where: str) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
            causes.add(f"{where}", f"Invalid value: {key!r}: prefix must be a DNS subdomain")
        if len(name) > 63 or not LABEL_NAME.fullmatch(name):
            causes.add(f"{where}", f"Invalid value: {key!r}: name part must be a label name")
        if (
            not isinstance(value, str)
            or len(value) > 63
            or (value and not LABEL_NAME.fullmatch(value))
        ):
            causes.add(f"{where}", f"Invalid value: {value!r}: a valid label value")


def check_metadata(resource: str, obj: Obj, namespace: str) -> str:
    """Name, namespace and labels; returns the name."""
    kind = KINDS[resource]
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    causes = Causes()
    if not name:
        causes.add("metadata.name", "Required value: name or generateName is required")
    elif len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        causes.add("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    if metadata.get("namespace") not in (None, namespace):
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    _labels(causes, metadata.get("labels") or {}, "metadata.labels")
    causes.raise_if_any(kind, name)
    return name


def _check_probe(causes: Causes, probe: dict[str, Any] | None, where: str, ports: set) -> None:
    if probe is None:
        return
    handlers = [h for h in PROBE_HANDLERS if probe.get(h) is not None]
    if len(handlers) != 1:
        causes.add(where, "Required value: must specify exactly one handler type")
        return
    port = (probe[handlers[0]] or {}).get("port")
    if handlers[0] in ("httpGet", "tcpSocket"):
        if isinstance(port, int) and not 1 <= port <= 65535:
            causes.add(f"{where}.{handlers[0]}.port", "Invalid value: must be 1-65535")
        if isinstance(port, str) and port not in ports:
            causes.add(f"{where}.{handlers[0]}.port", f"Invalid value: no port named {port!r}")


def _check_container(
    causes: Causes, container: dict[str, Any], where: str, volumes: set, *, init: bool
) -> None:
    if not container.get("image"):
        causes.add(f"{where}.image", "Required value")
    restart = container.get("restartPolicy")
    if restart is not None and (not init or restart != "Always"):
        causes.add(f"{where}.restartPolicy", f"Unsupported value: {restart!r}")
    names = set()
    for index, port in enumerate(container.get("ports") or []):
        if not 1 <= port["containerPort"] <= 65535:
            causes.add(f"{where}.ports[{index}].containerPort", "Invalid value: must be 1-65535")
        if port.get("name"):
            if len(port["name"]) > 15 or not DNS_LABEL.fullmatch(port["name"]):
                causes.add(f"{where}.ports[{index}].name", "Invalid value: an IANA_SVC_NAME")
            names.add(port["name"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        _check_probe(causes, container.get(probe), f"{where}.{probe}", names)
    for index, env in enumerate(container.get("env") or []):
        if not ENV_NAME.fullmatch(env.get("name", "")):
            causes.add(
                f"{where}.env[{index}].name", "Invalid value: a valid environment variable name"
            )
        if "value" in env and env.get("valueFrom") is not None:
            causes.add(
                f"{where}.env[{index}]", "Invalid value: may not have both value and valueFrom"
            )
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and not (ref.get("name") and ref.get("key")):
            causes.add(
                f"{where}.env[{index}].valueFrom.secretKeyRef", "Required value: name and key"
            )
    mounts = set()
    for index, mount in enumerate(container.get("volumeMounts") or []):
        if mount["name"] not in volumes:
            causes.add(f"{where}.volumeMounts[{index}].name", f"Not found: {mount['name']!r}")
        if not mount["mountPath"].startswith("/") or mount["mountPath"] in mounts:
            causes.add(
                f"{where}.volumeMounts[{index}].mountPath",
                "Invalid value: must be unique and absolute",
            )
        mounts.add(mount["mountPath"])
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for key, value in {**limits, **requests}.items():
        try:
            quantity(value)
        except ValueError as exc:
            causes.add(f"{where}.resources[{key}]", f"Invalid value: {value!r}: {exc}")
            return
    for key, value in requests.items():
        if key in limits and quantity(value) > quantity(limits[key]):
            causes.add(
                f"{where}.resources.requests[{key}]",
                "Invalid value: must be less than or equal to the limit",
            )


def check_pod(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    causes = Causes()
    if not spec.get("containers"):
        causes.add("spec.containers", "Required value")
    if spec.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
        causes.add("spec.restartPolicy", f"Unsupported value: {spec['restartPolicy']!r}")
    volumes = set()
    for index, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name", "")
        if not DNS_LABEL.fullmatch(name) or name in volumes:
            causes.add(f"spec.volumes[{index}].name", f"Invalid value: {name!r}")
        volumes.add(name)
        sources = [s for s in volume if s != "name" and volume[s] is not None]
        if len(sources) != 1 or sources[0] not in VOLUME_SOURCES:
            causes.add(f"spec.volumes[{index}]", f"the double supports one of {VOLUME_SOURCES}")
    seen = set()
    for field, init in (("initContainers", True), ("containers", False)):
        for index, container in enumerate(spec.get(field) or []):
            name = container.get("name", "")
            if not DNS_LABEL.fullmatch(name) or name in seen:
                causes.add(
                    f"spec.{field}[{index}].name", f"Invalid value: {name!r}: unique DNS label"
                )
            seen.add(name)
            _check_container(causes, container, f"spec.{field}[{index}]", volumes, init=init)
    causes.raise_if_any(KINDS["pods"], obj["metadata"]["name"])


def check_data(resource: str, obj: Obj) -> None:
    """Secret and ConfigMap keys; Secret data must be base64 (``stringData`` is folded in)."""
    causes = Causes()
    if resource == "secrets":
        data = obj.setdefault("data", {}) or {}
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj["data"] = data
        obj.setdefault("type", "Opaque")
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                causes.add(f"data[{key}]", "Invalid value: illegal base64 data")
    for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
        if not DATA_KEY.fullmatch(key):
            causes.add(
                f"data[{key}]",
                "Invalid value: a config key consists of alphanumerics, '-', '_' or '.'",
            )
    causes.raise_if_any(KINDS[resource], obj["metadata"]["name"])


def check_network_policy(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    causes = Causes()
    for kind in spec.get("policyTypes") or []:
        if kind not in ("Ingress", "Egress"):
            causes.add("spec.policyTypes", f"Unsupported value: {kind!r}")
    rules = [("ingress", r, "from") for r in spec.get("ingress") or []]
    rules += [("egress", r, "to") for r in spec.get("egress") or []]
    for direction, rule, peers in rules:
        for port in rule.get("ports") or []:
            if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
                causes.add(
                    f"spec.{direction}.ports.protocol", f"Unsupported value: {port['protocol']!r}"
                )
        for peer in rule.get(peers) or []:
            block = peer.get("ipBlock")
            if block is None:
                continue
            try:
                network = ipaddress.ip_network(block["cidr"])
            except ValueError:
                causes.add(
                    f"spec.{direction}.{peers}.ipBlock.cidr", f"Invalid value: {block['cidr']!r}"
                )
                continue
            for excluded in block.get("except") or []:
                try:
                    inner = ipaddress.ip_network(excluded)
                except ValueError:
                    inner = None
                if (
                    inner is None
                    or inner.version != network.version
                    or not inner.subnet_of(network)
                ):  # type: ignore[arg-type]
                    causes.add(
                        f"spec.{direction}.{peers}.ipBlock.except",
                        f"Invalid value: {excluded!r}: not a strict subset of {block['cidr']!r}",
                    )
    causes.raise_if_any(KINDS["networkpolicies"], obj["metadata"]["name"])


def check(resource: str, obj: Obj, namespace: str) -> str:
    """Every check for a body that is to be stored; returns the object's name."""
    check_model(resource, obj)
    name = check_metadata(resource, obj, namespace)
    if resource == "pods":
        check_pod(obj)
    elif resource in ("secrets", "configmaps"):
        check_data(resource, obj)
    elif resource == "networkpolicies":
        check_network_policy(obj)
    kind = KINDS[resource]
    obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
    return name
