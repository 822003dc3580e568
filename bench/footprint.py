"""Memory footprint (RSS) on the real platform, local driver.

- One idle sandbox (a ``shell`` session at its prompt): the jail's processes (bwrap, the
  runner, the shell: everything in its cgroup) and its vault (the mitmproxy sidecar and the
  relay beside it).
- The platform (``lap_serve``, daphne, the django-q2 cluster) idle, and with ``SESSIONS``
  ready sessions; and all those sandboxes together.

RSS counts pages shared between processes (the Python runtime, mitmproxy's modules) once per
process, so sums overstate what the machine spends; the per-sandbox PSS row splits shared
pages fairly.
"""

from __future__ import annotations

from pathlib import Path

from bench.processes import descendants
from bench.report import Row, print_rows, scaled
from bench.warm_pool import fill_pool
from sandboxes.drivers import cgroups
from tests.live import LivePlatform
from tests.reliability.local_sandboxes import sandbox_of

SESSIONS = scaled(100, 5)
MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss(pids: set[int]) -> float:
    return sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024 / MIB


def pss(pids: set[int]) -> float:
    return sum(_pss_kib(pid) for pid in pids) * 1024 / MIB


def sandbox_pids(platform: LivePlatform, session_id: str) -> tuple[set[int], set[int]]:
    """The session's sandbox: its jail's pids (its cgroup) and its vault's (sidecar, relay)."""
    _, meta = sandbox_of(platform, session_id)
    jail = cgroups.pids(meta["cgroups"]) or descendants(meta["jail_pid"])
    vault = descendants(meta["sidecar_pid"]) | descendants(meta["proxy_pid"])
    return jail, vault


def measure() -> list[Row]:
    platform = LivePlatform()
    platform.env["LAP_POOL_MAX"] = str(SESSIONS)
    platform.start()
    try:
        platform.settle_pool()
        agent = platform.create_agent("bench-footprint")["name"]
        assert platform.process is not None
        idle_platform = rss(descendants(platform.process.pid))
        first = platform.ready_session(agent)["id"]
        jail, vault = sandbox_pids(platform, first)
        one = {"jail": rss(jail), "vault": rss(vault), "pss": pss(jail | vault)}
        fill_pool(platform, SESSIONS - 1)
        others = [platform.ready_session(agent)["id"] for _ in range(SESSIONS - 1)]
        loaded_platform = rss(descendants(platform.process.pid))
        every = [sandbox_pids(platform, session_id) for session_id in (first, *others)]
        all_pids = set().union(*(jail | vault for jail, vault in every))
        all_rss, all_pss = rss(all_pids), pss(all_pids)
    finally:
        platform.stop()
    return [
        Row("footprint: one idle sandbox, jail (bwrap, runner, shell)", one["jail"], "MiB"),
        Row("footprint: one idle sandbox, vault (sidecar, relay)", one["vault"], "MiB"),
        Row("footprint: one idle sandbox, PSS of both", one["pss"], "MiB"),
        Row("footprint: platform (daphne, worker cluster), no session", idle_platform, "MiB"),
        Row(
            f"footprint: platform with {SESSIONS} sessions",
            loaded_platform,
            "MiB",
            idle_platform,
            "no session",
        ),
        Row(f"footprint: {SESSIONS} sandboxes, RSS", all_rss, "MiB"),
        Row(
            f"footprint: {SESSIONS} sandboxes, PSS per sandbox",
            all_pss / SESSIONS,
            "MiB",
            one["pss"],
            "one alone",
        ),
    ]


def main() -> None:
    print_rows(f"footprint: RSS of one idle sandbox and of {SESSIONS} sessions", measure())


if __name__ == "__main__":
    main()
