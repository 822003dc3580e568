"""What a sandbox pod's status means: ``kube_status.pod_state`` on statuses as clusters report
them (issue 7)."""

from __future__ import annotations

import datetime
import json

import pytest
from kubernetes.client import ApiClient

from sandboxes.drivers.kube_status import PodState, pod_state

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
GRACE = 120.0


def at(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def container(name: str, state: dict, *, ready: bool = False) -> dict:
    return {
        "name": name,
        "image": f"lap/{name}:0.1.0",
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "state": state,
    }


def pod(status: dict, *, deleting: bool = False) -> object:
    metadata = {"name": "lap-x", "namespace": "ns"}
    if deleting:
        metadata["deletionTimestamp"] = at(0)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status}
    return ApiClient().deserialize(json.dumps(body), "V1Pod", "application/json")


def verdict(status: dict, **kwargs) -> PodState:
    return pod_state(pod(status, **kwargs), NOW, GRACE)


RUNNING = {"running": {"startedAt": at(5)}}


def test_running_and_ready():
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [container("runner", RUNNING, ready=True)],
    }
    assert verdict(status) == PodState("running", ready=True)


def test_running_but_not_ready_yet():
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [container("runner", RUNNING)],
    }
    assert verdict(status) == PodState("running")


def test_plain_pending_has_no_reason():
    assert verdict({"phase": "Pending"}) == PodState("pending")


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("ImagePullBackOff", 'Back-off pulling image "lap/harness-shell:nope"'),
        ("InvalidImageName", 'couldn\'t parse image name "lap/Harness"'),
        ("CreateContainerConfigError", 'secret "lap-x" not found'),
    ],
)
def test_stuck_waiting_is_fatal_with_the_kubernetes_reason(reason, message):
    status = {
        "phase": "Pending",
        "containerStatuses": [
            container("runner", {"waiting": {"reason": reason, "message": message}})
        ],
    }
    assert verdict(status) == PodState("pending", f"runner: {reason}: {message}", fatal=True)


def test_a_first_failed_pull_is_not_fatal_yet():
    status = {
        "phase": "Pending",
        "containerStatuses": [container("runner", {"waiting": {"reason": "ErrImagePull"}})],
    }
    assert verdict(status) == PodState("pending")


def test_a_crash_looping_vault_sidecar_is_fatal():
    status = {
        "phase": "Pending",
        "initContainerStatuses": [
            container("vault", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}})
        ],
    }
    assert verdict(status) == PodState("pending", "vault: CrashLoopBackOff: back-off", fatal=True)


def test_unschedulable_is_fatal_only_after_the_grace():
    message = "0/3 nodes are available: 3 Insufficient cpu."

    def status(seconds_ago: float) -> dict:
        return {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": at(seconds_ago),
                }
            ],
        }

    assert verdict(status(10)) == PodState("pending", f"Unschedulable: {message}", fatal=False)
    assert verdict(status(GRACE + 1)) == PodState(
        "pending", f"Unschedulable: {message}", fatal=True
    )


@pytest.mark.parametrize(
    ("terminated", "reason"),
    [
        ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
        ({"exitCode": 2, "reason": "Error"}, "Error (exit code 2)"),
        ({"exitCode": 0, "reason": "Completed"}, "Completed"),
    ],
)
def test_an_ended_runner_is_exited_with_why(terminated, reason):
    status = {
        "phase": "Running",
        "containerStatuses": [container("runner", {"terminated": terminated})],
    }
    assert verdict(status) == PodState("exited", reason)


def test_a_failed_egress_init_container_says_so():
    status = {
        "phase": "Failed",
        "initContainerStatuses": [
            container("egress", {"terminated": {"exitCode": 4, "reason": "Error"}})
        ],
        "containerStatuses": [container("runner", {"waiting": {"reason": "PodInitializing"}})],
    }
    assert verdict(status) == PodState("exited", "init container egress: Error (exit code 4)")


def test_evicted_pods_carry_the_kubelet_message():
    status = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory.",
    }
    assert verdict(status) == PodState("exited", "Evicted: The node was low on resource: memory.")


def test_a_pod_being_deleted_has_exited():
    status = {"phase": "Running", "containerStatuses": [container("runner", RUNNING, ready=True)]}
    assert verdict(status, deleting=True) == PodState("exited", "pod deleted")
