"""What the kubelet double knows about one pod: its containers' states, its conditions, the
status it reports, and how the scheduler double sizes and places it (pure, no I/O)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .podnet import PodNet
from .store import Obj, now
from .validation import quantity


@dataclass
class ContainerRun:
    spec: Obj
    kind: str  # "init" | "sidecar" | "main"
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restarts: int = 0
    pulled: bool = False
    container_id: str = ""
    process: asyncio.subprocess.Process | None = None
    groups: dict[str, str] = field(default_factory=dict)
    oom: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def image(self) -> str:
        return self.spec["image"]

    def status(self) -> Obj:
        digest = hashlib.sha256(self.image.encode()).hexdigest()
        status: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"docker.io/{self.image}@sha256:{digest}" if self.pulled else "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started,
            "state": self.state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        if self.last_state:
            status["lastState"] = self.last_state
        return status


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    spec: Obj
    directory: Path
    log: int
    containers: list[ContainerRun]
    node: str | None = None
    net: PodNet | None = None
    phase: str = "Pending"
    reason: str = ""
    conditions: dict[str, Obj] = field(default_factory=dict)
    start_time: str | None = None
    task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    terminating: bool = False
    scheduling_message: str = ""

    @classmethod
    def of_pod(cls, obj: Obj, directory: Path, log: int) -> PodRun:
        metadata, spec = obj["metadata"], obj["spec"]
        containers = [
            ContainerRun(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
            for c in spec.get("initContainers") or []
        ] + [ContainerRun(c, "main") for c in spec["containers"]]
        return cls(
            metadata["namespace"],
            metadata["name"],
            metadata["uid"],
            spec,
            directory,
            log,
            containers,
        )

    def of(self, kind: str) -> list[ContainerRun]:
        return [c for c in self.containers if c.kind == kind]

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def requests(self) -> tuple[float, float]:
        """CPU and memory as the scheduler counts them: containers and sidecars, or the
        largest regular init container if that is more."""

        def of(container: Obj) -> tuple[float, float]:
            requests = (container.get("resources") or {}).get("requests") or {}
            return quantity(requests.get("cpu", "0")), quantity(requests.get("memory", "0"))

        inits = self.spec.get("initContainers") or []
        running = [of(c) for c in self.spec["containers"]]
        running += [of(c) for c in inits if c.get("restartPolicy") == "Always"]
        regular = [of(c) for c in inits if c.get("restartPolicy") != "Always"] or [(0.0, 0.0)]
        return (
            max(sum(r[0] for r in running), max(r[0] for r in regular)),
            max(sum(r[1] for r in running), max(r[1] for r in regular)),
        )

    def condition(self, kind: str, status: str, reason: str = "", message: str = "") -> None:
        """Set a condition; its transition time changes only when its status or reason do."""
        current = self.conditions.get(kind)
        if current is not None and (current["status"], current.get("reason", "")) == (
            status,
            reason,
        ):
            if message:
                current["message"] = message
            return
        condition: Obj = {"type": kind, "status": status, "lastTransitionTime": now()}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        self.conditions[kind] = condition

    def refresh_ready(self) -> None:
        mains, sidecars = self.of("main"), self.of("sidecar")
        containers_ready = bool(mains) and all(c.ready for c in mains) and not self.finished
        ready = containers_ready and all(c.ready for c in sidecars)
        self.condition("ContainersReady", "True" if containers_ready else "False")
        self.condition("Ready", "True" if ready else "False")

    def status(self) -> Obj:
        status: Obj = {
            "phase": self.phase,
            "conditions": list(self.conditions.values()),
            "initContainerStatuses": [c.status() for c in self.containers if c.kind != "main"],
            "containerStatuses": [c.status() for c in self.of("main")],
        }
        if self.reason:
            status["reason"] = self.reason
        if self.node is not None:
            status.update(hostIP="127.0.0.1", hostIPs=[{"ip": "127.0.0.1"}])
        if self.net is not None:
            status.update(podIP=self.net.ip, podIPs=[{"ip": self.net.ip}])
        if self.start_time:
            status["startTime"] = self.start_time
        return status


def fit(
    run: PodRun, others: Iterable[PodRun], nodes: list[str], cpu: str, memory: str
) -> tuple[str | None, str]:
    """The first node with room for ``run`` beside the unfinished pods already on it, or the
    scheduler's message saying why none has."""
    wanted_cpu, wanted_memory = run.requests
    capacity = (quantity(cpu), quantity(memory))
    placed = [other for other in others if other is not run and not other.finished]
    short: dict[str, int] = {}
    for node in nodes:
        used = [other.requests for other in placed if other.node == node]
        free_cpu = capacity[0] - sum(u[0] for u in used)
        free_memory = capacity[1] - sum(u[1] for u in used)
        if wanted_cpu <= free_cpu and wanted_memory <= free_memory:
            return node, ""
        if wanted_cpu > free_cpu:
            short["cpu"] = short.get("cpu", 0) + 1
        if wanted_memory > free_memory:
            short["memory"] = short.get("memory", 0) + 1
    reasons = ", ".join(f"{count} Insufficient {what}" for what, count in short.items())
    total = len(nodes)
    return None, (
        f"0/{total} nodes are available: {reasons}. preemption: 0/{total} nodes are "
        f"available: {total} No preemption victims found for incoming pod."
    )


def event_body(run: PodRun, kind: str, reason: str, message: str, component: str) -> Obj:
    """A core/v1 Event about the pod."""
    stamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{run.name}.{uuid.uuid4().hex[:16]}"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": run.name,
            "namespace": run.namespace,
            "uid": run.uid,
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": component, **({"host": run.node} if run.node else {})},
    }
