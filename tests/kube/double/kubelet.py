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

The pieces: ``pods`` (a pod's state, status and scheduling), ``volumes`` (files and env),
``containers`` (the launcher chain), ``podnet`` (network namespaces, pod IPs, probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import threading
import traceback
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from sandboxes.drivers import cgroups
from sandboxes.drivers.base import Resources

from .containers import Launch, Mount, launch_argv, write_etc
from .images import Image
from .podnet import PodNetwork
from .pods import ContainerRun, PodRun, event_body, fit
from .store import ApiError, Obj, Store, now
from .validation import quantity
from .volumes import environment, make_empty_dir, source_of, write_object_volume

PULL_RETRY = 2.0
FIRST_PROBE_EVERY = 0.25  # until the first success; then the probe's own period
USER_NAMES = {10001: "lap", 10002: "vault"}


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
        metadata = obj["metadata"]
        log_path = self.root / "logs" / f"{metadata['namespace']}_{metadata['name']}.log"
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        run = PodRun.of_pod(obj, self.root / metadata["uid"], log)
        self.pods[(run.namespace, run.name)] = run
        run.task = self.loop.create_task(self._run(run))

    async def _schedule(self, run: PodRun) -> None:
        assert self._capacity is not None
        while True:
            node, message = fit(
                run, list(self.pods.values()), self.nodes, self.node_cpu, self.node_memory
            )
            if node is not None:
                run.node = node
                run.condition("PodScheduled", "True")
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
                run.condition("PodScheduled", "False", "Unschedulable", message)
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
            run.condition("Initialized", "True")
            mains = [self.loop.create_task(self._main(run, c)) for c in run.of("main")]
            run.tasks += mains
            codes = await asyncio.gather(*mains)
            run.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            await self._stop_containers(run, run.of("sidecar"), 0)
            run.refresh_ready()
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
        (run.directory / "volumes").mkdir(mode=0o711)
        for volume in run.spec.get("volumes") or []:
            path = run.directory / "volumes" / volume["name"]
            source = source_of(volume)
            if source is None:
                make_empty_dir(path, fs_group)
            else:
                write_object_volume(
                    path, volume, await self._wait_for(run, volume, *source), fs_group
                )
        ports = sorted(
            {p["containerPort"] for c in run.containers for p in c.spec.get("ports") or []}
        )
        run.net = await self.network.start(ports, run.log)
        run.start_time = now()
        run.condition("PodReadyToStartContainers", "True")
        self._publish(run)

    async def _wait_for(self, run: PodRun, volume: Obj, resource: str, name: str) -> Obj:
        """The Secret or ConfigMap a volume shows, waiting (``FailedMount``) until it exists."""
        assert self._objects is not None
        reported = False
        while True:
            try:
                return self.store.get(resource, run.namespace, name)
            except ApiError:
                if not reported:
                    kind = resource.removesuffix("s")
                    message = (
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                        f'{kind} "{name}" not found'
                    )
                    self._event(run, "Warning", "FailedMount", message)
                    for container in run.containers:
                        container.state = {"waiting": {"reason": "ContainerCreating"}}
                    self._publish(run)
                    reported = True
                self._objects.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._objects.wait(), 1.0)

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
        env, missing = environment(self.store, run, container, image)
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
        run.refresh_ready()
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
        run.refresh_ready()
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
                run.refresh_ready()
                self._publish(run)
            period = readiness.get("periodSeconds", 10)
            await asyncio.sleep(period if container.ready else min(period, FIRST_PROBE_EVERY))

    async def _probe(self, run: PodRun, container: ContainerRun, probe: Obj) -> bool:
        assert run.net is not None
        return await self.network.probe(run.net, probe, container.spec.get("ports") or [])

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

    def _publish(self, run: PodRun) -> None:
        status = run.status()

        def write(obj: Obj) -> None:
            obj["status"] = {**(obj.get("status") or {}), **status}
            if run.node is not None:
                obj["spec"]["nodeName"] = run.node

        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.store.update("pods", run.namespace, run.name, write)

    def _event(
        self, run: PodRun, kind: str, reason: str, message: str, component: str = "kubelet"
    ) -> None:
        self.store.create(
            "events", run.namespace, event_body(run, kind, reason, message, component)
        )
