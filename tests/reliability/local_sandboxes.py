"""Looking at a live platform's local sandboxes from the host: their meta and processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.test_exec_and_recording import run
from tests.live import LivePlatform


def sandbox_of(platform: LivePlatform, session_id: str) -> tuple[Path, dict]:
    """The local driver's directory and meta of a ready session's sandbox, found by the
    hostname the sandbox reports ("lap-" + the first 8 hex digits of its id): a claimed warm
    sandbox's meta carries only its pool labels."""
    status, events = run(platform, session_id, {"argv": ["hostname"]})
    assert status == 200, events
    prefix = events[0]["data"].strip().removeprefix("lap-")
    for meta_file in (platform.home / "sandboxes").glob("*/meta.json"):
        if meta_file.parent.name.replace("-", "")[:8] == prefix:
            return meta_file.parent, json.loads(meta_file.read_text())
    raise AssertionError(f"no sandbox for session {session_id}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition, timeout: float, what: str):
    """Poll ``condition`` until it returns something true; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result
