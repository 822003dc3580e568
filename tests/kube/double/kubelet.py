"""The kubelet (and scheduler) of the test double: runs the pods the API server double stores.

For every new pod, on one event loop thread:

1. **schedule** it on one of ``nodes`` nodes whose free ``node_cpu``/``node_memory`` fit its
   requests, or leave it ``PodScheduled=False`` with the scheduler's message (``0/3 nodes
   are available: 3 Insufficient cpu. …``) and an event, retrying when capacity frees up;
2. **prepare** volumes (emptyDir directories, Secret and ConfigMap files with their modes and
   the pod's fsGroup; a missing Secret waits with a ``FailedMount`` event), the generated
   ``/etc`` and the pod network (``podnet``: own network namespace, pod IP on 127/8);
3. **run** init containers in order (a regular one to completion, its failure fails the pod;
   a native sidecar, ``restartPolicy: Always``, until its startup probe passes, restarted when
   it exits), then the main containers, each as real processes (``containers``) in cgroups
   with the memory and CPU limits; an image the double does not have waits in
   ``ErrImagePull``/``ImagePullBackOff``; readiness probes decide ``ready``;
4. **report** every change as the pod's status (phase, conditions, container states with
   reasons such as ``OOMKilled`` — the whole container is killed when the kernel's OOM killer
   strikes in it, like cgroup v2's ``memory.oom.group``) and as events;
5. **delete** gracefully: SIGTERM, ``terminationGracePeriodSeconds``, SIGKILL, then the pod
   object goes (and with it, by garbage collection, what it owns).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import os
import shutil
import signal
import threading
import traceback
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxes.drivers import cgroups
from sandboxes.drivers.base import Resources

from .containers import Launch, Mount, launch_argv, write_etc
from .images import Image
from .podnet import PodNet, PodNetwork
from .store import ApiError, Obj, Store, now
from .validation import quantity

PULL_RETRY = 2.0
FIRST_PROBE_EVERY = 0.25  # until the first success; then the probe's own period
USER_NAMES = {10001: "lap", 10002: "vault"}


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


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    spec: Obj
    directory: Path
    log: int
    requests: tuple[float, float]  # cpu, memory bytes
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

    def of(self, kind: str) -> list[ContainerRun]:
        return [c for c in self.containers if c.kind == kind]

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class Kubelet:
    def __init__(
        self,
        store: Store,
        images: dict[str, Image],
        root: Path,
        *,
        egress_ports: tuple[int, ...] = (),
        nodes: int = 3,
        node_cpu: str = "8",
        node_memory: str = "32Gi",
    ) -> None:
        self.store = store
        self.images = images
        self.root = root
        self.network = PodNetwork(egress_ports)
        self.nodes = [f"node-{n}" for n in range(1, nodes + 1)]
        self.node_cpu = node_cpu  # tests may shrink the nodes to make pods unschedulable
        self.node_memory = node_memory
        self.pods: dict[tuple[str, str], PodRun] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._capacity: asyncio.Event | None = None
        self._objects: asyncio.Event | None = None

    # --- lifecycle (any thread) ----------------------------------------------------------

    def start(self) -> Kubelet:
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)
        self._thread.start()
        self._call(self._setup())
        self.store.listeners.append(self._on_change)
        return self

    def stop(self) -> None:
        self.store.listeners.remove(self._on_change)
        self._call(self._shutdown(), timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _call(self, coroutine: Awaitable[Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    async def _setup(self) -> None:
        self._capacity = asyncio.Event()
        self._objects = asyncio.Event()

    async def _shutdown(self) -> None:
        await asyncio.gather(*(self._terminate(run, 0) for run in list(self.pods.values())))

    def log_of(self, namespace: str, name: str) -> str:
        """Everything the pod's containers wrote (for test failure messages)."""
        path = self.root / "logs" / f"{namespace}_{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> bool:
        """The API server's graceful delete: mark the pod, stop it, then remove it."""
        run = self.pods.get((namespace, name))
        if run is None:
            return False
        if run.terminating:
            return True
        if grace is None:
            grace = int(run.spec.get("terminationGracePeriodSeconds", 30))
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)

        def mark(obj: Obj) -> None:
            obj["metadata"]["deletionTimestamp"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        self.store.update("pods", namespace, name, mark)
        asyncio.run_coroutine_threadsafe(self._terminate(run, grace), self.loop)
        return True

    def _on_change(self, resource: str, kind: str, obj: Obj) -> None:
        metadata = obj["metadata"]
        if resource == "pods" and kind == "ADDED":
            self.loop.call_soon_threadsafe(self._admit, obj)
        elif resource == "pods" and kind == "DELETED":
            run = self.pods.get((metadata["namespace"], metadata["name"]))
            if run is not None and not run.terminating:
                asyncio.run_coroutine_threadsafe(self._terminate(run, 0), self.loop)
        elif resource in ("secrets", "configmaps"):
            self.loop.call_soon_threadsafe(self._wake, self._objects)

    @staticmethod
    def _wake(event: asyncio.Event | None) -> None:
        if event is not None:
            event.set()

    # --- admission and scheduling ----------------------------------------------------------

    def _admit(self, obj: Obj) -> None:
        metadata, spec = obj["metadata"], obj["spec"]
        containers = [
            ContainerRun(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
            for c in spec.get("initContainers") or []
        ] + [ContainerRun(c, "main") for c in spec["containers"]]
        directory = self.root / metadata["uid"]
        log_path = self.root / "logs" / f"{metadata['namespace']}_{metadata['name']}.log"
        run = PodRun(
            namespace=metadata["namespace"],
            name=metadata["name"],
            uid=metadata["uid"],
            spec=spec,
            directory=directory,
            log=os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            requests=_requests(spec),
            containers=containers,
        )
        self.pods[(run.namespace, run.name)] = run
        run.task = self.loop.create_task(self._run(run))

    def _fit(self, run: PodRun) -> tuple[str | None, str]:
        cpu, memory = run.requests
        capacity = (quantity(self.node_cpu), quantity(self.node_memory))
        short: dict[str, int] = {}
        for node in self.nodes:
            used = [
                other.requests
                for other in self.pods.values()
                if other.node == node and not other.finished and other is not run
            ]
            free_cpu = capacity[0] - sum(u[0] for u in used)
            free_memory = capacity[1] - sum(u[1] for u in used)
            if cpu <= free_cpu and memory <= free_memory:
                return node, ""
            if cpu > free_cpu:
                short["cpu"] = short.get("cpu", 0) + 1
            if memory > free_memory:
                short["memory"] = short.get("memory", 0) + 1
        reasons = ", ".join(f"{count} Insufficient {what}" for what, count in short.items())
        total = len(self.nodes)
        return None, (
            f"0/{total} nodes are available: {reasons}. preemption: 0/{total} nodes are "
            f"available: {total} No preemption victims found for incoming pod."
        )

    async def _schedule(self, run: PodRun) -> None:
        assert self._capacity is not None
        while True:
            node, message = self._fit(run)
            if node is not None:
                run.node = node
                self._condition(run, "PodScheduled", "True")
                self._event(
                    run,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {run.namespace}/{run.name} to {node}",
                    "default-scheduler",
                )
                self._publish(run)
                return
            if message != run.scheduling_message:
                run.scheduling_message = message
                self._condition(run, "PodScheduled", "False", "Unschedulable", message)
                self._event(run, "Warning", "FailedScheduling", message, "default-scheduler")
                self._publish(run)
            self._capacity.clear()
            await self._capacity.wait()

    # --- running a pod ---------------------------------------------------------------------

    async def _run(self, run: PodRun) -> None:
        try:
            await self._schedule(run)
            await self._prepare(run)
            for container in run.containers:
                if container.kind == "sidecar":
                    started = asyncio.Event()
                    run.tasks.append(self.loop.create_task(self._sidecar(run, container, started)))
                    await started.wait()
                elif container.kind == "init" and not await self._init(run, container):
                    run.phase = "Failed"
                    self._publish(run)
                    await self._stop_containers(run, run.of("sidecar"), 0)
                    self._wake(self._capacity)
                    return
            self._condition(run, "Initialized", "True")
            mains = [self.loop.create_task(self._main(run, c)) for c in run.of("main")]
            run.tasks += mains
            codes = await asyncio.gather(*mains)
            run.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            await self._stop_containers(run, run.of("sidecar"), 0)
            self._refresh_ready(run)
            self._wake(self._capacity)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the double: say so in the pod's log and status
            os.write(run.log, traceback.format_exc().encode())
            run.phase, run.reason = "Failed", "KubeletDoubleError"
            self._publish(run)

    async def _prepare(self, run: PodRun) -> None:
        run.directory.mkdir(mode=0o711)
        fs_group = (run.spec.get("securityContext") or {}).get("fsGroup")
        uids = {(c.spec.get("securityContext") or {}).get("runAsUser", 0) for c in run.containers}
        users = {USER_NAMES.get(uid, f"user{uid}"): uid for uid in sorted(uids) if uid}
        write_etc(run.directory / "etc", run.name, users)
        volumes = run.directory / "volumes"
        volumes.mkdir(mode=0o711)
        for volume in run.spec.get("volumes") or []:
            path = volumes / volume["name"]
            if "emptyDir" in volume:
                path.mkdir()
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                path.chmod(0o2777 if fs_group is not None else 0o777)
            else:
                files = await self._volume_files(run, volume)
                path.mkdir(mode=0o755)
                source = volume.get("secret") or volume.get("configMap") or {}
                for name, data in files.items():
                    target = path / name
                    target.write_bytes(data)
                    if fs_group is not None:
                        os.chown(target, 0, fs_group)
                    target.chmod(source.get("defaultMode", 0o644))
        ports = sorted(
            {p["containerPort"] for c in run.containers for p in c.spec.get("ports") or []}
        )
        run.net = await self.network.start(ports, run.log)
        run.start_time = now()
        self._condition(run, "PodReadyToStartContainers", "True")
        self._publish(run)

    async def _volume_files(self, run: PodRun, volume: Obj) -> dict[str, bytes]:
        """The files of a Secret or ConfigMap volume, waiting until the object exists."""
        assert self._objects is not None
        secret = volume.get("secret")
        resource, name = (
            ("secrets", secret["secretName"])
            if secret
            else ("configmaps", volume["configMap"]["name"])
        )
        reported = False
        while True:
            try:
                obj = self.store.get(resource, run.namespace, name)
                break
            except ApiError:
                if not reported:
                    kind = "secret" if secret else "configmap"
                    self._event(
                        run,
                        "Warning",
                        "FailedMount",
                        f"MountVolume.SetUp failed for "
                        f'volume "{volume["name"]}" : {kind} "{name}" not found',
                    )
                    for container in run.containers:
                        container.state = {"waiting": {"reason": "ContainerCreating"}}
                    self._publish(run)
                    reported = True
                self._objects.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._objects.wait(), 1.0)
        if secret:
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        source = secret or volume["configMap"]
        items = source.get("items")
        if items:
            return {item["path"]: data[item["key"]] for item in items if item["key"] in data}
        return data

    async def _pull(self, run: PodRun, container: ContainerRun) -> Image:
        first = True
        while container.image not in self.images:
            if first:
                message = (
                    f'failed to pull and unpack image "docker.io/{container.image}": '
                    f'"docker.io/{container.image}": not found'
                )
                container.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
                self._event(
                    run, "Warning", "Failed", f'Failed to pull image "{container.image}": {message}'
                )
            else:
                message = f'Back-off pulling image "{container.image}"'
                container.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
                self._event(run, "Normal", "BackOff", message)
            self._publish(run)
            first = False
            await asyncio.sleep(PULL_RETRY)
        container.pulled = True
        return self.images[container.image]

    async def _spawn(self, run: PodRun, container: ContainerRun, image: Image) -> bool:
        """Start the container's process; False (and a waiting reason) when it cannot be."""
        assert run.net is not None
        security = container.spec.get("securityContext") or {}
        pod_security = run.spec.get("securityContext") or {}
        uid = security.get("runAsUser", pod_security.get("runAsUser", 0))
        gid = security.get("runAsGroup", pod_security.get("runAsGroup", uid))
        problem = ""
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) and uid == 0:
            problem = "container has runAsNonRoot and image will run as root"
        env, missing = self._environment(run, container, image)
        problem = problem or missing
        if problem:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": problem}
            }
            self._event(run, "Warning", "Failed", f"Error: {problem}")
            self._publish(run)
            return False
        limits = (container.spec.get("resources") or {}).get("limits") or {}
        resources = Resources(
            memory_mb=int(quantity(limits.get("memory", "64Gi")) // 2**20),
            pids=4096,
            cpus=quantity(limits.get("cpu", "64")),
        )
        container.groups = cgroups.create(f"lapkube-{run.uid[:13]}-{container.name}", resources)
        fs_group = pod_security.get("fsGroup")
        volumes = {
            v["name"]: str(run.directory / "volumes" / v["name"]) for v in run.spec["volumes"]
        }
        sources = {v["name"]: v for v in run.spec["volumes"]}
        launch = Launch(
            pause_pid=run.net.pause.pid,
            hostname=run.name,
            uid=uid,
            gid=gid,
            groups=(fs_group,) if fs_group is not None else (),
            capabilities=tuple((security.get("capabilities") or {}).get("add") or ()),
            no_new_privs=security.get("allowPrivilegeEscalation") is False,
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            working_dir=container.spec.get("workingDir") or "/",
            image=image,
            mounts=tuple(
                Mount(
                    volumes[m["name"]],
                    m["mountPath"],
                    bool(m.get("readOnly"))
                    or "emptyDir" not in sources[m["name"]],  # Secrets, ConfigMaps: read-only
                )
                for m in container.spec.get("volumeMounts") or []
            ),
            etc=run.directory / "etc",
            stage=run.directory / "stage" / container.name,
            cgroup_procs=tuple(f"{group}/cgroup.procs" for group in container.groups.values()),
            argv=(*(container.spec.get("command") or ()), *(container.spec.get("args") or ())),
        )
        container.process = await asyncio.create_subprocess_exec(
            *launch_argv(launch),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=run.log,
            stderr=run.log,
            start_new_session=True,
        )
        container.oom = False
        container.container_id = "containerd://" + uuid.uuid4().hex
        container.state = {"running": {"startedAt": now()}}
        self._event(run, "Normal", "Started", f"Started container {container.name}")
        return True

    def _environment(
        self, run: PodRun, container: ContainerRun, image: Image
    ) -> tuple[dict[str, str], str]:
        """The container's environment, or why it cannot be made (a missing Secret key)."""
        env = dict(image.env)
        for variable in container.spec.get("env") or []:
            if "valueFrom" not in variable or variable["valueFrom"] is None:
                env[variable["name"]] = variable.get("value", "")
                continue
            source = variable["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                try:
                    data = self.store.get("secrets", run.namespace, ref["name"]).get("data") or {}
                except ApiError:
                    return env, f'secret "{ref["name"]}" not found'
                if ref["key"] not in data:
                    return (
                        env,
                        f"couldn't find key {ref['key']} in Secret {run.namespace}/{ref['name']}",
                    )
                env[variable["name"]] = base64.b64decode(data[ref["key"]]).decode()
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                values = {
                    "metadata.name": run.name,
                    "metadata.namespace": run.namespace,
                    "status.podIP": run.net.ip if run.net else "",
                }
                env[variable["name"]] = values.get(path, "")
        return env, ""

    async def _wait_exit(self, run: PodRun, container: ContainerRun) -> int:
        assert container.process is not None
        watcher = self.loop.create_task(self._watch_oom(container))
        try:
            code = await container.process.wait()
        finally:
            watcher.cancel()
        oom = container.oom or cgroups.oom_kills(container.groups) > 0
        await asyncio.to_thread(cgroups.kill, container.groups, self.loop.time() + 5)
        cgroups.remove(container.groups)
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        exit_code = 137 if oom else (code if code >= 0 else 128 - code)
        started = container.state.get("running", {}).get("startedAt")
        container.state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now(),
                "containerID": container.container_id,
            }
        }
        container.ready = False
        self._refresh_ready(run)
        return exit_code

    async def _watch_oom(self, container: ContainerRun) -> None:
        """Kill the whole container once the kernel's OOM killer struck in it."""
        while True:
            await asyncio.sleep(0.25)
            if cgroups.oom_kills(container.groups) > 0:
                container.oom = True
                for pid in cgroups.pids(container.groups):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return

    async def _init(self, run: PodRun, container: ContainerRun) -> bool:
        image = await self._pull(run, container)
        if not await self._spawn(run, container, image):
            await asyncio.Event().wait()  # stays waiting until the pod is deleted
        self._publish(run)
        code = await self._wait_exit(run, container)
        self._publish(run)
        return code == 0

    async def _sidecar(self, run: PodRun, container: ContainerRun, started: asyncio.Event) -> None:
        while True:
            image = await self._pull(run, container)
            if not await self._spawn(run, container, image):
                await asyncio.Event().wait()
            self._publish(run)
            probes = self.loop.create_task(self._probe_loop(run, container, started))
            try:
                await self._wait_exit(run, container)
            finally:
                probes.cancel()
            container.started = False
            if run.terminating or run.finished:
                return
            container.restarts += 1
            container.last_state = container.state
            delay = min(2 ** (container.restarts - 1), 30)
            if container.restarts > 1:
                message = f"back-off {delay}s restarting failed container={container.name}"
                container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self._publish(run)
            await asyncio.sleep(delay)

    async def _main(self, run: PodRun, container: ContainerRun) -> int:
        image = await self._pull(run, container)
        if not await self._spawn(run, container, image):
            await asyncio.Event().wait()
        container.started = True
        run.phase = "Running"
        self._publish(run)
        probes = self.loop.create_task(self._probe_loop(run, container, None))
        try:
            code = await self._wait_exit(run, container)
        finally:
            probes.cancel()
        self._publish(run)
        return code

    async def _probe_loop(
        self, run: PodRun, container: ContainerRun, started: asyncio.Event | None
    ) -> None:
        """Startup probe (sidecars) until it passes, then the readiness probe, forever."""
        startup = container.spec.get("startupProbe")
        if startup is not None:
            failures = 0
            while not await self._probe(run, container, startup):
                failures += 1
                if failures >= startup.get("failureThreshold", 3):
                    self._event(
                        run, "Warning", "Unhealthy", f"Startup probe failed: {container.name}"
                    )
                    assert container.process is not None
                    container.process.kill()
                    return
                await asyncio.sleep(min(startup.get("periodSeconds", 10), FIRST_PROBE_EVERY))
        container.started = True
        readiness = container.spec.get("readinessProbe")
        if readiness is None:
            container.ready = True
        self._refresh_ready(run)
        self._publish(run)
        if started is not None:
            started.set()
        failures = 0
        while readiness is not None:
            ok = await self._probe(run, container, readiness)
            failures = 0 if ok else failures + 1
            ready = ok or (container.ready and failures < readiness.get("failureThreshold", 3))
            if ready != container.ready:
                container.ready = ready
                self._refresh_ready(run)
                self._publish(run)
            period = readiness.get("periodSeconds", 10)
            await asyncio.sleep(period if container.ready else min(period, FIRST_PROBE_EVERY))

    async def _probe(self, run: PodRun, container: ContainerRun, probe: Obj) -> bool:
        """One probe attempt, made from inside the pod's network (as the kubelet reaches the
        pod IP), never through the ingress splice."""
        assert run.net is not None
        handler = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = handler.get("port")
        if isinstance(port, str):
            named = {p.get("name"): p["containerPort"] for p in container.spec.get("ports") or []}
            port = named.get(port)
        try:
            async with asyncio.timeout(probe.get("timeoutSeconds", 1)):
                connection = await self.network.connect_in(run.net, int(port))
                reader, writer = await asyncio.open_connection(sock=connection)
                try:
                    if "httpGet" not in probe:
                        return True
                    path = handler.get("path", "/")
                    writer.write(
                        f"GET {path} HTTP/1.1\r\nHost: {run.net.ip}:{port}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    await writer.drain()
                    status = (await reader.readline()).split()
                    return len(status) > 1 and 200 <= int(status[1]) < 400
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError):
            return False

    # --- stopping ------------------------------------------------------------------------

    async def _stop_containers(
        self, run: PodRun, containers: list[ContainerRun], grace: float
    ) -> None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL; waits until they are gone."""
        running = [c for c in containers if c.process is not None and c.process.returncode is None]
        for container in running:
            for pid in cgroups.pids(container.groups) or {container.process.pid}:  # type: ignore[union-attr]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(c.process.wait() for c in running))  # type: ignore[union-attr]
        for container in running:
            await asyncio.to_thread(cgroups.kill, container.groups, self.loop.time() + 5)
            with contextlib.suppress(ProcessLookupError):
                container.process.kill()  # type: ignore[union-attr]
            await container.process.wait()  # type: ignore[union-attr]

    async def _terminate(self, run: PodRun, grace: float) -> None:
        if run.terminating:
            return
        run.terminating = True
        tasks = [*run.tasks, *([run.task] if run.task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        order = [*run.of("main"), *reversed(run.of("sidecar")), *run.of("init")]
        await self._stop_containers(run, order, grace)
        for container in run.containers:
            cgroups.remove(container.groups)
        if run.net is not None:
            await self.network.stop(run.net)
        os.close(run.log)
        shutil.rmtree(run.directory, ignore_errors=True)
        self.pods.pop((run.namespace, run.name), None)
        with contextlib.suppress(ApiError):
            self.store.remove("pods", run.namespace, run.name)
        self._wake(self._capacity)

    # --- status --------------------------------------------------------------------------

    def _condition(
        self, run: PodRun, kind: str, status: str, reason: str = "", message: str = ""
    ) -> None:
        current = run.conditions.get(kind)
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
        run.conditions[kind] = condition

    def _refresh_ready(self, run: PodRun) -> None:
        mains, sidecars = run.of("main"), run.of("sidecar")
        containers_ready = bool(mains) and all(c.ready for c in mains) and not run.finished
        ready = containers_ready and all(c.ready for c in sidecars)
        self._condition(run, "ContainersReady", "True" if containers_ready else "False")
        self._condition(run, "Ready", "True" if ready else "False")

    def _container_status(self, run: PodRun, container: ContainerRun) -> Obj:
        digest = hashlib.sha256(container.image.encode()).hexdigest()
        status: Obj = {
            "name": container.name,
            "image": container.image,
            "imageID": f"docker.io/{container.image}@sha256:{digest}" if container.pulled else "",
            "ready": container.ready,
            "restartCount": container.restarts,
            "started": container.started,
            "state": container.state,
        }
        if container.container_id:
            status["containerID"] = container.container_id
        if container.last_state:
            status["lastState"] = container.last_state
        return status

    def _publish(self, run: PodRun) -> None:
        status: Obj = {
            "phase": run.phase,
            "conditions": list(run.conditions.values()),
            "initContainerStatuses": [
                self._container_status(run, c) for c in run.containers if c.kind != "main"
            ],
            "containerStatuses": [self._container_status(run, c) for c in run.of("main")],
        }
        if run.reason:
            status["reason"] = run.reason
        if run.node is not None:
            status.update(hostIP="127.0.0.1", hostIPs=[{"ip": "127.0.0.1"}])
        if run.net is not None:
            status.update(podIP=run.net.ip, podIPs=[{"ip": run.net.ip}])
        if run.start_time:
            status["startTime"] = run.start_time

        def write(obj: Obj) -> None:
            obj["status"] = {**(obj.get("status") or {}), **status}
            if run.node is not None:
                obj["spec"]["nodeName"] = run.node

        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.store.update("pods", run.namespace, run.name, write)

    def _event(
        self, run: PodRun, kind: str, reason: str, message: str, component: str = "kubelet"
    ) -> None:
        stamp = now()
        event = {
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
        self.store.create("events", run.namespace, event)


def _requests(spec: Obj) -> tuple[float, float]:
    """The pod's effective requests: its containers and sidecars, or its largest regular init
    container if that is more (as the scheduler counts them)."""

    def of(container: Obj) -> tuple[float, float]:
        requests = (container.get("resources") or {}).get("requests") or {}
        return quantity(requests.get("cpu", "0")), quantity(requests.get("memory", "0"))

    inits = spec.get("initContainers") or []
    running = [of(c) for c in spec["containers"]]
    running += [of(c) for c in inits if c.get("restartPolicy") == "Always"]
    regular = [of(c) for c in inits if c.get("restartPolicy") != "Always"] or [(0.0, 0.0)]
    return (
        max(sum(r[0] for r in running), max(r[0] for r in regular)),
        max(sum(r[1] for r in running), max(r[1] for r in regular)),
    )
