"""`lap` in a real pseudo-terminal (pexpect), for the PTY tests against either platform.

`lap` runs under a small sh wrapper that prints `stty -a` of the outer PTY before and after, and
lap's exit status, so every test can check that the terminal came back exactly as it was."""

from __future__ import annotations

import json
import stat
import subprocess
import termios
import time
from pathlib import Path
from typing import Protocol

import pexpect

from tests.lapcli.conftest import LAP, ROOT


class Platform(Protocol):
    url: str
    key: str

    def lap_env(self, config_dir: Path, **extra: str) -> dict[str, str]: ...


def lap_env(platform: Platform, config_dir: Path) -> dict[str, str]:
    """The platform's environment for ``lap``, importing lapcli from this checkout: the
    ``lap`` script of a shared virtualenv would otherwise run another worktree's code."""
    return {**platform.lap_env(config_dir), "PYTHONPATH": str(ROOT)}


PROMPT = r"\$ "
WRAPPER = (
    # `trap : INT`: Ctrl-C is for lap; a handler (unlike an ignore) is reset when lap is exec'd.
    'trap : INT; echo "<stty-before>"; stty -a; echo "</stty>"; "$@"; rc=$?; '
    'echo "<stty-after>"; stty -a; echo "</stty>"; echo "lap-exit=$rc"'
)


class Lap:
    """`lap ARGS` in a 100x30 pseudo-terminal."""

    def __init__(self, platform: Platform, tmp_path: Path, *args: str) -> None:
        self.child = pexpect.spawn(
            "sh",
            ["-c", WRAPPER, "sh", LAP, *args],
            env=lap_env(platform, tmp_path / "conf"),
            dimensions=(30, 100),
            encoding="utf-8",
            timeout=15,
        )
        self.stty_before = self._stty("before")

    def _stty(self, which: str) -> list[str]:
        self.child.expect(f"<stty-{which}>\r\n(.*?)</stty>")
        # Compare settings, not layout (stty wraps to the width) or size (resized on purpose).
        words = self.child.match.group(1).replace(";", " ").split()
        return [
            w
            for i, w in enumerate(words)
            if w not in ("rows", "columns") and words[i - 1] not in ("rows", "columns")
        ]

    def is_raw(self) -> bool:
        lflag = termios.tcgetattr(self.child.child_fd)[3]
        return not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)

    def finish(self, timeout: float = 15) -> int:
        """Wait for lap to end; assert the terminal was restored; return lap's exit status."""
        after = self._stty("after")
        self.child.expect(r"lap-exit=(\d+)", timeout=timeout)
        code = int(self.child.match.group(1))
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert after == self.stty_before
        return code


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def run_lap(platform: Platform, config_dir: Path, *args: str, anonymous: bool = False):
    """``lap ARGS`` as a plain subprocess (no terminal); ``anonymous``: no LAP_URL/LAP_KEY."""
    env = lap_env(platform, config_dir)
    if anonymous:
        del env["LAP_URL"], env["LAP_KEY"]
    return subprocess.run(
        [LAP, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def login_writes_a_private_config(platform: Platform, config_dir: Path):
    """``lap login --url --key`` succeeds and writes the config 0600 in a 0700 directory."""
    result = run_lap(
        platform,
        config_dir,
        "login",
        "--url",
        platform.url,
        "--key",
        platform.key,
        anonymous=True,
    )
    assert result.returncode == 0, result.stderr
    path = config_dir / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": platform.url, "key": platform.key}
    return result


def exec_passes_exit_code_and_streams(platform: Platform, config_dir: Path, agent: str) -> None:
    script = "echo to-out; echo to-err >&2; exit 3"
    result = run_lap(platform, config_dir, "exec", agent, "--", "sh", "-c", script)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "to-out\n"
    assert "to-err\n" in result.stderr
    assert "to-out" not in result.stderr
