"""A pod's files and environment as the kubelet double lays them out: emptyDir directories,
Secret and ConfigMap volumes (their ``items``, ``defaultMode`` and the pod's fsGroup), and
container env from values, Secret keys and the downward API."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .images import Image
from .pods import ContainerRun, PodRun
from .store import ApiError, Obj, Store


def source_of(volume: Obj) -> tuple[str, str] | None:
    """``(resource, name)`` of the object a volume shows, None for an emptyDir."""
    if volume.get("secret") is not None:
        return "secrets", volume["secret"]["secretName"]
    if volume.get("configMap") is not None:
        return "configmaps", volume["configMap"]["name"]
    return None


def make_empty_dir(path: Path, fs_group: int | None) -> None:
    """World-writable as Kubernetes makes it; group-owned by the fsGroup (setgid) if any."""
    path.mkdir()
    if fs_group is not None:
        os.chown(path, 0, fs_group)
    path.chmod(0o2777 if fs_group is not None else 0o777)


def write_object_volume(path: Path, volume: Obj, obj: Obj, fs_group: int | None) -> None:
    """The files of a Secret or ConfigMap volume: its ``items`` (else every key), each with
    ``defaultMode``, owned by root and the fsGroup."""
    source = volume.get("secret") or volume.get("configMap") or {}
    encoded = obj.get("data") or {}
    if volume.get("secret") is not None:
        data = {key: base64.b64decode(value) for key, value in encoded.items()}
    else:
        data = {key: value.encode() for key, value in encoded.items()}
    items = source.get("items")
    if items:
        data = {item["path"]: data[item["key"]] for item in items if item["key"] in data}
    path.mkdir(mode=0o755)
    for name, content in data.items():
        target = path / name
        target.write_bytes(content)
        if fs_group is not None:
            os.chown(target, 0, fs_group)
        target.chmod(source.get("defaultMode", 0o644))


def environment(
    store: Store, run: PodRun, container: ContainerRun, image: Image
) -> tuple[dict[str, str], str]:
    """The container's environment, or why it cannot be made (a missing Secret or key)."""
    env = dict(image.env)
    for variable in container.spec.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = variable.get("value", "")
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            try:
                data = store.get("secrets", run.namespace, ref["name"]).get("data") or {}
            except ApiError:
                return env, f'secret "{ref["name"]}" not found'
            if ref["key"] not in data:
                return (
                    env,
                    f"couldn't find key {ref['key']} in Secret {run.namespace}/{ref['name']}",
                )
            env[variable["name"]] = base64.b64decode(data[ref["key"]]).decode()
        elif "fieldRef" in source:
            values = {
                "metadata.name": run.name,
                "metadata.namespace": run.namespace,
                "status.podIP": run.net.ip if run.net else "",
            }
            env[variable["name"]] = values.get(source["fieldRef"]["fieldPath"], "")
    return env, ""
