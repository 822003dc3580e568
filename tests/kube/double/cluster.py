"""The whole Kubernetes test double: the API server double and its kubelet, one object.

``FakeCluster(root, egress_ports=...)`` serves on ``cluster.url`` (plain HTTP, 127.0.0.1,
port 0) with the LAP images (``images.lap_images``) and the default PriorityClasses;
``write_kubeconfig(path)`` makes a kubeconfig for it and ``client()`` a ``CoreV1Api``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kubernetes import client

from .apiserver import ApiServer
from .images import Image, lap_images
from .kubelet import Kubelet
from .store import Store

PRIORITY_CLASSES = frozenset(
    {"lap-sandbox-active", "lap-sandbox-warm", "system-cluster-critical", "system-node-critical"}
)


class FakeCluster:
    def __init__(
        self,
        *,
        egress_ports: tuple[int, ...] = (),
        images: dict[str, Image] | None = None,
        runtime_classes: frozenset[str] = frozenset(),
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lap-kube-"))
        self.root.chmod(0o711)
        self.store = Store()
        self.api = ApiServer(
            self.store, priority_classes=PRIORITY_CLASSES, runtime_classes=runtime_classes
        )
        self.kubelet = Kubelet(
            self.store,
            lap_images() if images is None else images,
            self.root / "kubelet",
            egress_ports=egress_ports,
        )
        self.api.pod_deleter = self.kubelet.delete_pod

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> FakeCluster:
        self.kubelet.start()
        self.api.start()
        return self

    def stop(self) -> None:
        self.api.stop()
        self.kubelet.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def kubeconfig(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "double", "user": {"token": "double-token"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
            "current-context": "double",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps(self.kubeconfig()))  # JSON is YAML
        return path

    def client(self) -> client.CoreV1Api:
        return client.CoreV1Api(client.ApiClient(client.Configuration(host=self.url)))
