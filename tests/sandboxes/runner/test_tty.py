"""The /tty WebSocket against a real runner and real PTYs."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pyte
import pytest
from websockets.asyncio.client import unix_connect
from websockets.exceptions import ConnectionClosed

from sandboxes.runner.protocol import CLOSE_NOT_STARTED, CLOSE_START_FAILED, CLOSE_TOO_SLOW
from sandboxes.runner_client import RunnerClient, RunnerError

from .conftest import (
    SHELL_ENV,
    TOKEN,
    drain_until_closed,
    read_quiet,
    read_until,
    resize_message,
)
from .test_recording import parse_asciicast


class TolerantScreen(pyte.Screen):
    """pyte.Screen that ignores ``CSI > ... m`` (vim sends it; plain pyte 0.8 crashes)."""

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:
            super().select_graphic_rendition(*attrs)


def render(data: bytes, cols: int = 80, rows: int = 24) -> pyte.Screen:
    screen = TolerantScreen(cols, rows)
    pyte.ByteStream(screen).feed(data)
    return screen


async def test_wrong_or_missing_token_refuses_the_upgrade(runner):
    for token in ("wrong", ""):
        with pytest.raises(RunnerError) as exc:
            await RunnerClient(runner.url, token).connect_tty()
        assert exc.value.status == 401


async def test_attach_before_start_closes_4409(runner):
    ws = await runner.client.connect_tty()
    closed = await drain_until_closed(ws)
    assert closed.rcvd.code == CLOSE_NOT_STARTED
    assert closed.rcvd.reason == "not started"


async def test_echo_round_trip_and_ping(runner):
    runner.start_shell()
    ws = await runner.client.connect_tty()
    await read_until(ws, b"$ ")
    await ws.send(b"echo hi\n")
    assert b"\rhi\r\n" in await read_until(ws, b"\rhi\r\n")
    await ws.send(json.dumps({"type": "ping"}))
    while (frame := await asyncio.wait_for(ws.recv(), 5)) != '{"type": "pong"}':
        assert isinstance(frame, bytes), frame
    # A text frame that is not a JSON object is keystrokes too.
    await ws.send("echo text-frame-$((40+2))\n")
    await read_until(ws, b"text-frame-42")
    await ws.close()


async def test_resize_is_seen_by_stty(runner):
    runner.start_shell()
    ws = await runner.client.connect_tty()
    await ws.send(resize_message(123, 40))
    await ws.send(b"stty size\n")
    assert b"\r40 123\r\n" in await read_until(ws, b"\r40 123\r\n")


async def test_resize_follows_the_most_recent_writer(runner):
    runner.start_shell()
    a = await runner.client.connect_tty()
    b = await runner.client.connect_tty()
    await a.send(resize_message(100, 30))
    await b.send(resize_message(60, 20))
    await b.send(b"stty size\n")
    await read_until(b, b"\r20 60\r\n")
    await a.send(b"stty size\n")  # a writes now: its size applies again
    await read_until(a, b"\r30 100\r\n")


async def test_two_clients_see_the_same_bytes(runner):
    runner.start_shell()
    a = await runner.client.connect_tty()
    b = await runner.client.connect_tty()
    await read_quiet(a)
    await read_quiet(b)
    await a.send(b"for i in $(seq 1 300); do echo line-$i; done; echo END-$((6*7))\n")
    seen_a = await read_until(a, b"END-42")
    seen_b = await read_until(b, b"END-42")
    seen_a += await read_quiet(a)
    seen_b += await read_quiet(b)
    assert b"line-300\r\n" in seen_a
    assert seen_a == seen_b


async def test_reattach_shows_earlier_output_and_the_screen(runner):
    runner.start_shell()
    ws = await runner.client.connect_tty()
    await ws.send(b"seq 1 200; echo DONE-$((1+1))\n")
    await read_until(ws, b"DONE-2")
    await read_quiet(ws)
    await ws.close()

    again = await runner.client.connect_tty()
    first = await asyncio.wait_for(again.recv(), 5)
    assert isinstance(first, bytes)
    # Lines long scrolled off the screen come back as scrollback...
    assert b"\r\n5\r\n" in first
    assert b"\r\n150\r\n" in first
    # ...and the frame ends with the current screen: prompt under DONE-2, cursor after it.
    screen = render(first)
    text = [line.rstrip() for line in screen.display]
    done_row = text.index("DONE-2")
    assert text[done_row - 1] == "200"
    assert text[done_row + 1] == "$"
    assert (screen.cursor.y, screen.cursor.x) == (done_row + 1, 2)


CURSES_PROGRAM = """
import curses

def main(win):
    curses.start_color()
    curses.init_pair(1, curses.COLOR_RED, curses.COLOR_BLACK)
    win.addstr(0, 0, "TOP-LEFT title", curses.A_BOLD)
    for row in range(2, 20):
        win.addstr(row, 4 + row, f"row {row:02d}", curses.color_pair(1))
    win.addstr(22, 60, "BOTTOM-RIGHT")
    win.move(10, 40)
    win.refresh()
    while win.getch() != ord("q"):
        pass

curses.wrapper(main)
"""


def full_screen_programs(directory: Path) -> list[tuple[str, list[str]]]:
    script = directory / "tui.py"
    script.write_text(CURSES_PROGRAM)
    programs = [("curses", [sys.executable, str(script)])]
    if shutil.which("vim"):
        text = directory / "lines.txt"
        text.write_text("".join(f"line {n:02d}\n" for n in range(1, 61)))
        programs.append(("vim", ["vim", "-u", "NONE", "-N", "-n", str(text)]))
    return programs


@pytest.mark.parametrize("program", ["curses", "vim"])
async def test_reattach_reproduces_a_full_screen_program(start_runner, program):
    runner = start_runner()
    programs = dict(full_screen_programs(runner.directory))
    if program not in programs:
        pytest.skip(f"{program} is not installed")
    runner.client.start(programs[program], SHELL_ENV, cwd=str(runner.directory))
    watcher = await runner.client.connect_tty()
    if program == "vim":
        seen = await read_until(watcher, b"line 23")
        await watcher.send(b"\x06")  # ^F: a page down, so the screen is not the initial one
        seen += await read_until(watcher, b"line 44")
        expected_top = "line 22"
    else:
        seen = await read_until(watcher, b"BOTTOM-RIGHT")
        expected_top = "TOP-LEFT title"
    seen += await read_quiet(watcher)
    reference = render(seen)

    late = await runner.client.connect_tty()
    first = await asyncio.wait_for(late.recv(), 5)
    assert isinstance(first, bytes)
    screen = render(first)
    assert screen.display == reference.display
    assert screen.display[0].startswith(expected_top)
    assert (screen.cursor.x, screen.cursor.y) == (reference.cursor.x, reference.cursor.y)
    if program == "curses":
        assert screen.display[5][9:15] == "row 05"
        assert screen.buffer[5][9].fg == "red"
        assert screen.buffer[0][0].bold is True
        assert screen.display[22][60:72] == "BOTTOM-RIGHT"
        assert (screen.cursor.y, screen.cursor.x) == (10, 40)
    # The new client also gets the live stream afterwards.
    await late.send(b"q" if program == "curses" else b":q!\r")
    closed = await drain_until_closed(late)
    assert closed.rcvd.code == 1000


async def test_slow_client_is_dropped_while_another_keeps_receiving(runner):
    runner.start_shell()
    fast = await runner.client.connect_tty()
    # max_queue=1: the client stops reading its socket almost at once.
    slow = await unix_connect(
        runner.url.removeprefix("unix://"),
        uri="ws://runner/tty",
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        max_queue=1,
        max_size=None,
        compression=None,
    )
    await read_quiet(fast)
    await fast.send(b"head -c 30000000 /dev/zero | base64 -w 0; echo; echo FIN-$((3*3))\n")
    await read_until(fast, b"FIN-9", timeout=60)  # fast got everything though slow never read
    closed = await drain_until_closed(slow)
    assert closed.rcvd.code == CLOSE_TOO_SLOW
    assert closed.rcvd.reason == "client too slow"
    await fast.send(b"echo still-$((2+3))\n")
    await read_until(fast, b"still-5")


async def test_harness_exit_is_delivered(runner):
    runner.client.start(["sh", "-c", "read line; echo bye-$line; exit 7"], SHELL_ENV, cwd="/")
    ws = await runner.client.connect_tty()
    await ws.send(b"now\n")
    frames = []
    closed = None
    try:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 5))
    except ConnectionClosed as exc:
        closed = exc
    assert b"bye-now" in b"".join(f for f in frames if isinstance(f, bytes))
    assert frames[-1] == '{"type": "exit", "code": 7}'
    assert closed is not None and closed.rcvd.code == 1000
    assert runner.client.health() == {"ok": True, "started": True, "exit_code": 7, "turn": False}


async def test_attaching_after_the_exit_starts_the_harness_again(start_runner, workdir):
    runner = start_runner("--recording", str(workdir / "rec.cast"))
    harness = ["sh", "-c", 'read line; eval "$line"; exit 7']
    first_pid = runner.client.start(harness, SHELL_ENV, cwd="/", cols=90, rows=30)["pid"]
    ws = await runner.client.connect_tty()
    await ws.send(b"echo bye-one\n")
    await read_until(ws, b"bye-one\r\n")
    assert (await drain_until_closed(ws)).rcvd.code == 1000

    # Two clients attach at once: one new harness, at the last size, which both share.
    late, other = await asyncio.gather(runner.client.connect_tty(), runner.client.connect_tty())
    assert runner.client.health()["exit_code"] is None
    await late.send(b"stty size; echo pid-$$ end-$((1+1))\n")
    output = await read_until(other, b"end-2")
    assert b"end-2" in await read_until(late, b"end-2")
    assert b"30 90" in output and f"pid-{first_pid}\r".encode() not in output
    assert (await drain_until_closed(late)).rcvd.code == 1000

    # The recording goes on in the same file, the restart marked.
    _, events = parse_asciicast(runner.client.recording())
    markers = [payload for _, kind, payload in events if kind == "m"]
    assert markers == ["harness started again"]
    output = "".join(payload for _, kind, payload in events if kind == "o")
    assert output.index("bye-one") < output.index("30 90")


async def test_a_harness_that_cannot_start_again_closes_4500(runner, workdir):
    cwd = workdir / "gone"
    cwd.mkdir()
    runner.client.start(["sh", "-c", "exit 3"], SHELL_ENV, cwd=str(cwd))
    await asyncio.sleep(0.6)  # the exit, then its drain timeout
    cwd.rmdir()
    ws = await runner.client.connect_tty()
    closed = await drain_until_closed(ws)
    assert closed.rcvd.code == CLOSE_START_FAILED
    assert closed.rcvd.reason == (
        "the harness exited and could not start again: No such file or directory"
    )
