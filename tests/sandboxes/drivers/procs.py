"""Process helpers for the local driver tests: which sandbox processes are alive."""

from __future__ import annotations

import os
from pathlib import Path

# Per test process, so concurrent suites on one machine never share sandbox uids.
UID_BASE = 2_000_000 + (os.getpid() % 5000) * 200
UID_RANGE = range(UID_BASE, UID_BASE + 200)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sandbox_processes() -> list[int]:
    """Live (non-zombie) processes running under this test process's sandbox uids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) in UID_RANGE and not fields["State"].strip().startswith(
            "Z"
        ):
            found.append(int(entry.name))
    return found
