"""The real ``lap`` in a real pseudo-terminal against the real platform: daphne, the worker,
bwrap sandboxes and the runner's PTY (tests/live.py). The fake-platform tests in
test_terminal.py cover what the real one cannot be made to do on demand (chat harnesses,
dropped sockets, refused tokens)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.lapcli.ptyharness import (
    PROMPT,
    Lap,
    exec_passes_exit_code_and_streams,
    login_writes_a_private_config,
)
from tests.live import LivePlatform

pytestmark = [pytest.mark.e2e, pytest.mark.bwrap]


@pytest.fixture(scope="module")
def agent(live_platform: LivePlatform) -> str:
    return live_platform.create_agent("cli-shell")["name"]


def test_login_writes_a_0600_config(live_platform: LivePlatform, tmp_path: Path) -> None:
    login_writes_a_private_config(live_platform, tmp_path / "conf")


def test_attach_echo_resize_detach_and_reattach(
    live_platform: LivePlatform, agent: str, tmp_path: Path
) -> None:
    lap = Lap(live_platform, tmp_path, agent)
    child = lap.child
    child.expect(rf"session (\S+) for agent {agent}")
    session_id = child.match.group(1)
    child.expect(PROMPT)
    assert lap.is_raw()
    child.sendline("echo round-$((20+22))-trip")
    child.expect("round-42-trip")
    child.sendline("stty size")
    child.expect("30 100")
    child.setwinsize(41, 123)
    time.sleep(0.3)  # SIGWINCH → resize frame → TIOCSWINSZ in the sandbox
    child.sendline("stty size")
    child.expect("41 123")
    child.send("\x04")
    child.expect(f"detached — re-attach with: lap attach {session_id}")
    assert lap.finish() == 0

    again = Lap(live_platform, tmp_path, "attach", session_id)
    again.child.expect("round-42-trip")  # the earlier screen comes back
    again.child.sendline("echo kept-$((2*3)) > /work/note; exit 5")
    again.child.expect(
        f"session {session_id}: process exited with code 5"
        f" — attach again to start it anew: lap attach {session_id}"
    )
    assert again.finish() == 5

    # Attaching after the exit starts a new shell in the same sandbox: its files are kept.
    anew = Lap(live_platform, tmp_path, "attach", session_id)
    anew.child.expect(PROMPT)
    anew.child.sendline("cat /work/note")
    anew.child.expect("kept-6")
    anew.child.send("\x04")
    anew.child.expect("detached")
    assert anew.finish() == 0


def test_exec_returns_the_exit_code_and_splits_streams(
    live_platform: LivePlatform, agent: str, tmp_path: Path
) -> None:
    exec_passes_exit_code_and_streams(live_platform, tmp_path / "conf", agent)


def test_platform_restart_reconnects_and_the_shell_kept_running(tmp_path: Path) -> None:
    platform = LivePlatform().start()
    try:
        name = platform.create_agent("restart-shell")["name"]
        lap = Lap(platform, tmp_path, name)
        lap.child.expect(PROMPT)
        lap.child.sendline("KEPT=$((6*7)); echo set-$KEPT")
        lap.child.expect("set-42")
        platform.kill_server()
        lap.child.expect("connection lost; reconnecting")
        assert lap.is_raw()
        platform.serve()
        lap.child.expect("reconnected", timeout=30)
        lap.child.sendline("echo still-$KEPT")
        lap.child.expect("still-42")  # the same shell, with its variable, survived the restart

        platform.kill_server()  # now for good: lap gives up and restores the terminal
        lap.child.expect("could not reconnect within 30s", timeout=45)
        assert lap.finish() == 7
    finally:
        platform.stop()
