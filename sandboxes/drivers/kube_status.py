"""What a sandbox pod's status means for the platform (pure: a ``V1Pod`` in, a verdict out).

``pod_state`` reduces the pod's phase, conditions and container statuses to the driver's
vocabulary: ``running`` (``ready`` once every container passed its probes), ``pending``
(with a ``reason`` only when something is wrong; ``fatal`` when waiting longer will not help)
or ``exited`` (with why: ``OOMKilled``, ``Error (exit code 1)``, ``Evicted: …``,
``pod deleted``). ``wait_ready`` gives up on a fatal pending pod at once; reconcile fails a
creating session whose pod is pending with a reason, and kills a ready one whose pod exited.

Unschedulable is fatal only after ``unschedulable_grace`` seconds: while a pod preempts
lower-priority ones, or a cluster autoscaler adds a node, the scheduler reports it for a while.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from kubernetes.client import V1ContainerStatus, V1Pod

from .kube_manifests import RUNNER_CONTAINER

# Waiting reasons that do not fix themselves: a wrong image name or tag, a registry that
# refuses, a container the runtime cannot create, the vault sidecar crashing in a loop. A
# first failed pull (ErrImagePull) may be a registry hiccup: the back-off after it is not.
FATAL_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class PodState:
    state: str  # "pending" | "running" | "exited"
    reason: str = ""
    ready: bool = False
    fatal: bool = False


def _with_message(reason: str, message: str | None) -> str:
    return f"{reason}: {message}" if message else reason


def _terminated(status: V1ContainerStatus) -> str | None:
    """Why a container ended, if it has: ``OOMKilled``, ``Error (exit code N)``…"""
    terminated = status.state.terminated if status.state else None
    if terminated is None:
        return None
    reason = terminated.reason or "Terminated"
    if reason in ("OOMKilled", "Completed"):
        return reason
    return f"{reason} (exit code {terminated.exit_code})"


def _waiting(statuses: list[V1ContainerStatus]) -> str | None:
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            return f"{status.name}: " + _with_message(waiting.reason, waiting.message)
    return None


def pod_state(pod: V1Pod, now: datetime.datetime, unschedulable_grace: float) -> PodState:
    """The verdict on one sandbox pod at ``now`` (an aware datetime)."""
    metadata, status = pod.metadata, pod.status
    if metadata is not None and metadata.deletion_timestamp is not None:
        return PodState("exited", "pod deleted")
    if status is None:
        return PodState("pending")
    init_statuses = status.init_container_statuses or []
    statuses = status.container_statuses or []
    runner = next((s for s in statuses if s.name == RUNNER_CONTAINER), None)
    ended = _terminated(runner) if runner is not None else None
    if ended is not None:
        return PodState("exited", ended)
    if status.phase in ("Failed", "Succeeded"):
        for init in init_statuses:
            why = _terminated(init)
            if why is not None and why != "Completed":
                return PodState("exited", f"init container {init.name}: {why}")
        return PodState("exited", _with_message(status.reason or status.phase, status.message))
    stuck = _waiting(init_statuses + statuses)
    if stuck is not None:
        return PodState("pending", stuck, fatal=True)
    conditions = {condition.type: condition for condition in status.conditions or []}
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        reason = _with_message(scheduled.reason or "Unschedulable", scheduled.message)
        since = scheduled.last_transition_time
        waited = (now - since).total_seconds() if since is not None else 0.0
        return PodState("pending", reason, fatal=waited >= unschedulable_grace)
    ready = conditions.get("Ready")
    if status.phase == "Running":
        return PodState("running", ready=ready is not None and ready.status == "True")
    return PodState("pending")
