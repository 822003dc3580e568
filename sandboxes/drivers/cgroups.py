"""cgroup v1 limits for local sandboxes (memory, pids, cpu), when the hierarchy is writable.

Each sandbox gets ``<controller mount>/<creating process's own cgroup>/lap/<sandbox id>`` per
controller. Nesting under the creator's own cgroup keeps a sandbox inside whatever limits the
platform itself runs under; on a host where the platform sits in the root cgroup this is
``/sys/fs/cgroup/<controller>/lap/<id>``. The directories are recorded by the caller, so any
later process can find, kill and remove them. Only cgroup v1 is handled: where it is absent or
read-only, ``create`` returns no groups and the driver falls back to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .base import Resources

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _own_path(controller: str) -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _parent(controller: str) -> Path | None:
    own = _own_path(controller)
    mount = CGROUP_ROOT / controller
    if own is None or not (mount / "tasks").exists():
        return None
    return mount / own.lstrip("/") / "lap"


def create(sandbox_id: str, resources: Resources) -> dict[str, str]:
    """Make the sandbox's groups with their limits; ``{}`` when cgroup v1 is not writable.

    Returns ``{controller: directory}``; a process joins by writing its pid to
    ``<directory>/cgroup.procs``.
    """
    made: dict[str, str] = {}
    limits = {
        "memory": _memory_limits(resources.memory_mb),
        "pids": {"pids.max": str(resources.pids)},
        "cpu": {
            "cpu.cfs_period_us": str(CPU_PERIOD_US),
            "cpu.cfs_quota_us": str(max(1000, int(resources.cpus * CPU_PERIOD_US))),
        },
    }
    try:
        for controller, files in limits.items():
            parent = _parent(controller)
            if parent is None:
                remove(made)
                return {}
            group = parent / sandbox_id
            group.mkdir(parents=True, exist_ok=True)
            made[controller] = str(group)
            for name, value in files.items():
                path = group / name
                if path.exists():
                    path.write_text(value)
    except OSError:
        remove(made)
        return {}
    return made


def _memory_limits(memory_mb: int) -> dict[str, str]:
    limit = str(memory_mb * 1024 * 1024)
    # memsw (memory + swap) must be set after the memory limit, so swap is no way around it.
    return {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit}


def pids(groups: dict[str, str]) -> set[int]:
    """Every process in any of the groups."""
    found: set[int] = set()
    for group in groups.values():
        with contextlib.suppress(OSError):
            found.update(int(p) for p in Path(group, "cgroup.procs").read_text().split())
    return found


def kill(groups: dict[str, str], deadline: float) -> bool:
    """SIGKILL every process in the groups until they are empty; False if time ran out."""
    while True:
        alive = pids(groups)
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove(groups: dict[str, str]) -> None:
    """Remove the (empty) groups; missing ones are fine."""
    for group in groups.values():
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(group)


def oom_kills(groups: dict[str, str]) -> int:
    """How many processes the kernel's OOM killer killed in the memory group."""
    group = groups.get("memory")
    if group is None:
        return 0
    try:
        text = Path(group, "memory.oom_control").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0
