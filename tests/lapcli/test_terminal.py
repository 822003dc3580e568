"""The real `lap` executable in a real pseudo-terminal (pexpect) against a real loopback server
(daphne serving tests/lapcli/fakeplatform.py, whose terminal sessions are bash on a real PTY)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lapcli.client import Client
from lapcli.status import ConnectionLost, LapError, SessionFailed
from lapcli.tty import (
    CLOSE_MESSAGES,
    CLOSE_UNAUTHORIZED,
    LEAVE_ALTERNATE_SCREEN,
    RESET_MODES,
    _Attachment,
)

from .conftest import LAP, FakePlatform
from .ptyharness import (
    PROMPT,
    Lap,
    exec_passes_exit_code_and_streams,
    login_writes_a_private_config,
    wait_for,
)


def test_login_writes_a_0600_config(platform: FakePlatform, tmp_path: Path) -> None:
    result = login_writes_a_private_config(platform, tmp_path / "conf")
    assert "(123 agents)" in result.stdout  # counted across three pages of at most 50


def test_attach_echo_resize_detach_and_reattach(platform: FakePlatform, tmp_path: Path) -> None:
    lap = Lap(platform, tmp_path, "shell")
    child = lap.child
    child.expect(r"session (\S+) for agent shell")
    session_id = child.match.group(1)
    child.expect("ready after")
    child.expect(PROMPT)
    assert lap.is_raw()
    child.sendline("echo round-$((20+22))-trip")
    child.expect("round-42-trip")
    child.sendline("stty size")
    child.expect("30 100")
    child.setwinsize(41, 123)
    wait_for(lambda: [123, 41] in platform.seen(session_id)["resizes"])
    assert platform.seen(session_id)["resizes"] == [[100, 30], [123, 41]]
    child.sendline("stty size")
    child.expect("41 123")
    child.send("\x04")
    child.expect(f"detached — re-attach with: lap attach {session_id}")
    assert lap.finish() == 0

    again = Lap(platform, tmp_path, "attach", session_id)
    again.child.expect("round-42-trip")  # the earlier screen is replayed
    again.child.sendline("echo still-$((1+1))")
    again.child.expect("still-2")
    again.child.sendline("exit 5")
    again.child.expect(f"session {session_id}: process exited with code 5")
    assert again.finish() == 5


def test_detaching_from_a_full_screen_program_gives_the_terminal_back(
    platform: FakePlatform, tmp_path: Path
) -> None:
    lap = Lap(platform, tmp_path, "shell")
    lap.child.expect(PROMPT)
    lap.child.sendline(r"printf '\033[?1049h\033[?1000h\033[?25l'; echo in-$((1+1))-screen")
    lap.child.expect("in-2-screen")
    lap.child.send("\x04")
    lap.child.expect_exact((LEAVE_ALTERNATE_SCREEN + RESET_MODES).decode())  # then the line
    lap.child.expect("detached — re-attach with")
    assert lap.finish() == 0


def test_exec_returns_the_exit_code_and_splits_streams(
    platform: FakePlatform, tmp_path: Path
) -> None:
    exec_passes_exit_code_and_streams(platform, tmp_path / "conf", "shell")


def test_raw_mode_is_restored_when_the_server_dies(
    private_platform: FakePlatform, tmp_path: Path
) -> None:
    lap = Lap(private_platform, tmp_path, "shell")
    lap.child.expect(PROMPT)
    assert lap.is_raw()
    private_platform.stop()  # SIGKILL: no close frame, the socket just goes away
    lap.child.expect("connection lost; reconnecting")
    assert lap.is_raw()  # still attached while it retries
    lap.child.expect("could not reconnect within 30s", timeout=45)
    assert lap.finish() == 7  # ExitStatus.CONNECTION_LOST


def test_sigterm_restores_the_terminal(platform: FakePlatform, tmp_path: Path) -> None:
    lap = Lap(platform, tmp_path, "shell")
    lap.child.expect(PROMPT)
    assert lap.is_raw()
    lap_pid = int(
        subprocess.check_output(["pgrep", "-P", str(lap.child.pid), "-f", LAP], text=True).split()[
            0
        ]
    )
    os.kill(lap_pid, signal.SIGTERM)
    assert lap.finish() == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    ("command", "line", "stopped"),
    [
        (["slow"], "lap: cancelled; the new session was stopped", True),
        (["exec", "slow", "--", "true"], "lap: interrupted", True),
        (["attach"], "lap: interrupted", False),  # someone else's session keeps running
    ],
)
def test_ctrl_c_while_waiting_for_a_session_exits_130(
    platform: FakePlatform,
    client: Client,
    tmp_path: Path,
    command: list[str],
    line: str,
    stopped: bool,
) -> None:
    if command == ["attach"]:
        command = ["attach", str(client.create_session(client.resolve_agent("slow")["id"])["id"])]
    lap = Lap(platform, tmp_path, *command)
    output = io.StringIO()
    lap.child.logfile_read = output
    lap.child.expect("starting_harness")  # the spinner, while the sandbox comes up
    (session_id,) = [s["id"] for s in client.list_sessions() if s["status"] == "creating"]
    lap.child.sendintr()
    lap.child.expect_exact(line)
    assert lap.finish() == 130
    assert "Traceback" not in output.getvalue()
    assert client.get_session(session_id)["status"] == ("dead" if stopped else "creating")
    client.delete_session(session_id)


def test_chat_repl_aborts_a_turn_on_ctrl_c_and_ends_on_ctrl_d(
    platform: FakePlatform, tmp_path: Path
) -> None:
    lap = Lap(platform, tmp_path, "chat")
    child = lap.child
    child.expect(r"chat with session (\S+) ")
    session_id = child.match.group(1)
    child.expect("you> ")
    child.sendline("hello there")
    child.expect("you said: hello there")
    child.expect("you> ")
    child.sendline("slow")
    child.expect("you said: slow")
    child.sendintr()
    child.expect(r"\[aborted\]")
    child.expect("you> ")
    assert platform.seen(session_id)["aborts"] == 1
    child.sendline("again")
    child.expect("you said: again")
    child.expect("you> ")
    child.sendeof()
    child.expect(f"lap attach {session_id}")
    assert lap.finish() == 0
    assert platform.seen(session_id)["messages"] == ["hello there", "slow", "again"]


def test_reconnects_with_a_fresh_token_when_the_socket_drops(
    platform: FakePlatform, tmp_path: Path
) -> None:
    lap = Lap(platform, tmp_path, "shell")
    child = lap.child
    child.expect(r"session (\S+) for agent shell")
    session_id = child.match.group(1)
    child.expect(PROMPT)
    child.sendline("echo before-$((2*3))")
    child.expect("before-6")
    httpx.post(f"{platform.url}/_test/sessions/{session_id}", trust_env=False)
    child.expect("connection lost; reconnecting")
    child.expect("reconnected")
    child.sendline("echo after-$((3*3))")
    child.expect("after-9")
    tokens = platform.seen(session_id)["tty_tokens_seen"]
    assert len(tokens) == 2 and tokens[0] != tokens[1]  # the rotated token was fetched anew
    assert lap.is_raw()
    child.send("\x04")
    child.expect("detached")
    assert lap.finish() == 0


@pytest.fixture
def client(platform: FakePlatform) -> Iterator[Client]:
    client = Client(platform.url, platform.key)
    yield client
    client.close()


@pytest.fixture
def pipe() -> Iterator[Callable[..., tuple[int, int]]]:
    """``pipe()`` is ``os.pipe()`` whose ends are closed after the test; ``pipe(reader=False)``
    closes the read end at once, so writes fail with EPIPE (its number is not to be used)."""
    made: list[int] = []

    def make(*, reader: bool = True) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        if not reader:
            os.close(read_fd)
        made.extend((read_fd, write_fd) if reader else (write_fd,))
        return read_fd, write_fd

    yield make
    for fd in made:
        os.close(fd)


def ready_session(client: Client) -> str:
    session = client.create_session(client.resolve_agent("shell")["id"])
    wait_for(lambda: client.get_session(session["id"])["status"] == "ready")
    return str(session["id"])


def attach_until_it_ends(client: Client, session_id: str, stdin_fd: int, stdout_fd: int) -> None:
    """Run an attach on the given fds; it must end on its own well before the 30 s
    reconnect budget (a local error is not a lost connection)."""
    attachment = _Attachment(client, session_id, stdin_fd, stdout_fd)
    asyncio.run(asyncio.wait_for(attachment.run(), timeout=10))


def test_a_refused_token_ends_the_attach_with_one_line(
    platform: FakePlatform, client: Client, pipe, monkeypatch
) -> None:
    session_id = ready_session(client)
    real_get = client.get_session
    monkeypatch.setattr(client, "get_session", lambda sid: {**real_get(sid), "tty_token": "forged"})
    stdin_r, _ = pipe()
    _, stdout_w = pipe()
    with pytest.raises(LapError) as refused:
        asyncio.run(_Attachment(client, session_id, stdin_r, stdout_w).run())
    assert refused.value.message == CLOSE_MESSAGES[CLOSE_UNAUTHORIZED]
    assert platform.seen(session_id)["tty_tokens_seen"] == ["Bearer forged"]


def test_stdin_that_cannot_be_polled_ends_the_attach(client: Client, pipe) -> None:
    _, stdout_w = pipe()
    with open(os.devnull, "rb") as devnull, pytest.raises(LapError) as failed:
        attach_until_it_ends(client, ready_session(client), devnull.fileno(), stdout_w)
    assert not isinstance(failed.value, ConnectionLost)
    assert failed.value.message.startswith("cannot read from stdin: ")


def test_a_closed_stdout_ends_the_attach(client: Client, pipe) -> None:
    stdin_r, stdin_w = pipe()
    _, stdout_w = pipe(reader=False)  # writing to stdout fails with EPIPE
    os.write(stdin_w, b"echo hello\n")
    with pytest.raises(LapError) as failed:
        attach_until_it_ends(client, ready_session(client), stdin_r, stdout_w)
    assert not isinstance(failed.value, ConnectionLost)
    assert failed.value.message.startswith("cannot write to stdout: ")


def test_attaching_to_a_stopped_session_says_it_was_stopped(client: Client, pipe) -> None:
    session_id = ready_session(client)
    client.delete_session(session_id)
    read_fd, write_fd = pipe()  # stdin and stdout: never used, it ends before connecting
    with pytest.raises(SessionFailed) as ended:
        attach_until_it_ends(client, session_id, read_fd, write_fd)
    assert ended.value.message == f"session {session_id} was stopped"
