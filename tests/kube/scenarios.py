"""End-to-end scenarios of the platform on the Kubernetes driver, shared by the test double
(``test_platform.py``) and a real cluster (``test_cluster.py``).

A ``Target`` is a live platform (``lap_serve`` with ``LAP_SANDBOX_DRIVER=kubernetes``) and a
client of the cluster it uses. Every scenario acts only through the platform's API, the
terminal WebSocket and the Kubernetes API, so it runs the same against either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from kubernetes import client

from tests.e2e.terminal import attach, read_until
from tests.live import ROOT, LivePlatform

CREATE_TIMEOUT = 120


@dataclass
class Target:
    platform: LivePlatform
    core: client.CoreV1Api
    namespace: str

    def pods(self, selector: str) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def secrets(self, selector: str) -> list[client.V1Secret]:
        return self.core.list_namespaced_secret(self.namespace, label_selector=selector).items

    def set_pool(self, target: int) -> None:
        reply = self.platform.api("PUT", "/pool", json={"targets": {"shell": target}})
        assert reply.status_code == 200, reply.text

    def pool(self) -> dict:
        return self.platform.api("GET", "/pool").json()["harnesses"]["shell"]

    def drain_pool(self) -> None:
        """No warm pods: a target of 0, then pool maintenance recycling every warm one (run
        now, with ``LAP_POOL_MAX_AGE=0``), so the next session is a cold start."""
        self.set_pool(0)
        wait_for(lambda: not self.pool()["provisioning"], CREATE_TIMEOUT, "provisioning")
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", "from pool.tasks import pool_maintain; "
             "pool_maintain()"],
            cwd=ROOT,
            env={**self.platform.env, "LAP_POOL_MAX_AGE": "0"},
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.pool()["warm"] == 0, self.pool()

    def agent(self, **fields) -> str:
        name = f"kube-{uuid.uuid4().hex[:8]}"
        self.platform.create_agent(name, **fields)
        return name

    def reconcile(self) -> None:
        """Run reconcile now, in a process of its own (its schedule ticks every minute)."""
        self.platform.manage(
            "shell", "-c", "from sandboxes.tasks import sandbox_reconcile; sandbox_reconcile()"
        )


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def start_session(target: Target, agent: str) -> tuple[dict, list[str]]:
    """POST a session and follow it to the end of bring-up; (session, statuses seen)."""
    reply = target.platform.api("POST", f"/agents/{agent}/session", json={})
    assert reply.status_code == 201, reply.text
    session = reply.json()
    seen = [session["status"]]
    deadline = time.monotonic() + CREATE_TIMEOUT
    while session["status"] == "creating":
        assert time.monotonic() < deadline, f"session stuck: {session}"
        time.sleep(0.1)
        session = target.platform.api("GET", f"/sessions/{session['id']}").json()
        if session["status"] != seen[-1]:
            seen.append(session["status"])
    return session, seen


def run(target: Target, session: dict, script: str) -> tuple[str, int | None]:
    """``sh -c script`` in the session's sandbox (``POST /exec``): (output, exit code)."""
    with target.platform.client.stream(
        "POST",
        f"/api/v1/managed_agents/sessions/{session['id']}/exec",
        json={"argv": ["sh", "-c", script], "timeout": 30},
    ) as reply:
        assert reply.status_code == 200, reply.read()
        events = [json.loads(line) for line in reply.iter_lines() if line]
    return "".join(e.get("data", "") for e in events), events[-1].get("exit_code")


def session_pod(target: Target, session_id: str) -> client.V1Pod:
    [pod] = target.pods(f"lap.session/id={session_id}")
    return pod


# --- scenarios ---------------------------------------------------------------------------


def a_session_comes_up_on_a_pod_and_its_terminal_round_trips(target: Target) -> None:
    session, seen = start_session(target, target.agent())
    assert seen == ["creating", "ready"], session
    pod = session_pod(target, session["id"])
    assert pod.status.phase == "Running"
    assert pod.spec.priority_class_name == "lap-sandbox-active"
    assert pod.metadata.labels["lap.agent/id"] == session["agent_id"]

    async def round_trip() -> bytes:
        ws = await attach(target.platform.tty_url(session), session["tty_token"])
        try:
            await ws.send(b"echo kube-$((6*7)) $(id -u)\n")
            return await read_until(ws, b"kube-42 10001", timeout=20)
        finally:
            await ws.close()

    assert b"kube-42 10001" in asyncio.run(round_trip())


def the_stored_pod_has_every_security_field(target: Target) -> None:
    session, _ = start_session(target, target.agent())
    pod = client.ApiClient().sanitize_for_serialization(session_pod(target, session["id"]))
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["shareProcessNamespace"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
    for name, uid in (("runner", 10001), ("vault", 10002)):
        context = containers[name]["securityContext"]
        assert context["runAsUser"] == uid and context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert containers["egress"]["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN"],
    }
    assert containers["vault"]["restartPolicy"] == "Always"
    assert containers["vault"]["startupProbe"]["httpGet"]["port"] == 3129
    assert [c["name"] for c in spec["initContainers"]] == ["egress", "vault"]
    mounts = {
        name: {m["name"] for m in c.get("volumeMounts") or []} for name, c in containers.items()
    }
    assert [name for name, used in mounts.items() if "vault-secret" in used] == ["vault"]
    assert {"work", "tmp"} <= mounts["runner"]
    runner = containers["runner"]
    assert runner["resources"]["limits"] == runner["resources"]["requests"]
    assert {"cpu", "memory"} <= set(runner["resources"]["limits"])
    labels = pod["metadata"]["labels"]
    assert labels["lap.session/id"] == session["id"]
    assert {"lap.sandbox/id", "lap.agent/id", "app.kubernetes.io/managed-by"} <= set(labels)
    [secret] = target.secrets(f"lap.sandbox/id={labels['lap.sandbox/id']}")
    [owner] = secret.metadata.owner_references
    assert (owner.kind, owner.uid) == ("Pod", pod["metadata"]["uid"])


def the_vault_swaps_a_secret_on_the_way_out(target: Target, upstream) -> None:
    """The agent sends the stub through the vault; the upstream receives the real value."""
    value = "ghp_kube_" + secrets.token_hex(16)
    agent = target.agent(
        env_vars={"GITHUB_TOKEN": value},
        env_var_hosts={"GITHUB_TOKEN": ["localhost"]},
        allow_out=["localhost", "127.0.0.1"],
    )
    session, _ = start_session(target, agent)
    assert session["status"] == "ready", session
    script = (
        'unset NO_PROXY no_proxy; curl -sS -m 20 -H "Authorization: Bearer $GITHUB_TOKEN" '
        f"https://localhost:{upstream.port}/kube-vault"
    )
    with target.platform.client.stream(
        "POST",
        f"/api/v1/managed_agents/sessions/{session['id']}/exec",
        json={"argv": ["sh", "-c", script], "timeout": 30},
    ) as reply:
        events = [json.loads(line) for line in reply.iter_lines() if line]
    output = "".join(e.get("data", "") for e in events)
    assert events[-1] == {"exit_code": 0}, events
    seen = [r for r in upstream.received if r.get("path") == "/kube-vault"][-1]
    assert ("Authorization", f"Bearer {value}") in [tuple(h) for h in seen["headers"]]
    assert value not in output and "lap_stub_GITHUB_TOKEN_" in output
    assert value not in target.platform.log.read_text()


def the_agent_reaches_the_outside_only_through_the_vault(target: Target) -> None:
    """Straight out of the pod, the egress rules refuse the agent's connection at once; through
    the vault, the vault's own policy answers (this agent may go to api.github.com only)."""
    session, _ = start_session(target, target.agent(allow_out=["api.github.com"]))
    direct = (
        'python3 -c \'import socket\ntry: socket.create_connection(("192.0.2.10", 80), 10)\n'
        "except OSError as e: print(type(e).__name__)'"
    )
    output, _ = run(target, session, direct)
    assert output.strip() == "ConnectionRefusedError", output  # not a timeout: rejected
    proxied = "curl -sS -m 10 -o /dev/null -D - -x http://127.0.0.1:3128 http://192.0.2.10/"
    output, code = run(target, session, proxied)
    assert code == 0 and output.startswith("HTTP/1.1 403"), output
    assert "x-vault-blocked: egress_denied" in output.lower(), output


def deleting_the_session_deletes_its_pod_and_secret(target: Target) -> None:
    session, _ = start_session(target, target.agent())
    pod = session_pod(target, session["id"])
    sandbox = pod.metadata.labels["lap.sandbox/id"]
    assert target.secrets(f"lap.sandbox/id={sandbox}")
    reply = target.platform.api("DELETE", f"/sessions/{session['id']}")
    assert reply.status_code in (200, 204), reply.text
    wait_for(lambda: not target.pods(f"lap.sandbox/id={sandbox}"), what="the pod to go")
    assert target.secrets(f"lap.sandbox/id={sandbox}") == []


def a_pod_deleted_behind_the_platforms_back_turns_its_session_dead(target: Target) -> None:
    session, _ = start_session(target, target.agent())
    pod = session_pod(target, session["id"])
    target.core.delete_namespaced_pod(pod.metadata.name, target.namespace)
    wait_for(lambda: not target.pods(f"lap.session/id={session['id']}"), what="the pod to go")
    assert target.platform.api("GET", f"/sessions/{session['id']}").json()["status"] == "ready"
    target.reconcile()
    after = target.platform.api("GET", f"/sessions/{session['id']}").json()
    assert (after["status"], after["failure_reason"]) == ("dead", "sandbox vanished")


def a_warm_pod_is_claimed_by_a_new_session(target: Target) -> None:
    target.set_pool(1)
    try:
        wait_for(lambda: target.pool()["warm"] >= 1, CREATE_TIMEOUT, "a warm pod")
        [warm] = target.pods("lap.pool/harness=shell")
        assert warm.spec.priority_class_name == "lap-sandbox-warm"
        before = target.pool()["claimed"]
        session, seen = start_session(target, target.agent())
        assert (session["status"], seen) == ("ready", ["ready"]), session  # claimed at once
        assert target.pool()["claimed"] == before + 1
        assert target.pods(f"lap.session/id={session['id']}") == []  # no cold pod was made
        ws_session = target.platform.api("GET", f"/sessions/{session['id']}").json()
        expected = b"warm-42 " + warm.metadata.name.encode()  # the prompt shows the name too

        async def round_trip() -> bytes:
            ws = await attach(target.platform.tty_url(ws_session), ws_session["tty_token"])
            try:
                await ws.send(b"echo warm-$((40+2)) $(hostname)\n")
                return await read_until(ws, expected, timeout=20)
            finally:
                await ws.close()

        assert expected in asyncio.run(round_trip())
    finally:
        target.drain_pool()


def an_image_that_cannot_be_pulled_fails_the_session_with_the_reason(target: Target) -> None:
    """``target`` runs with an image registry that has none of the images."""
    session, seen = start_session(target, target.agent())
    assert seen == ["creating", "failed"], session
    assert "ImagePullBackOff: Back-off pulling image" in session["failure_reason"], session
    wait_for(lambda: not target.pods(f"lap.session/id={session['id']}"), what="the pod to go")


def kubeconfig_b64(kubeconfig: dict) -> str:
    return base64.b64encode(json.dumps(kubeconfig).encode()).decode()
