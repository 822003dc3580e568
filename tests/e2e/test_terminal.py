"""Issue 3, end to end: a shell session through real daphne, the real bwrap jail and a real PTY."""

from __future__ import annotations

import asyncio
import json
import time

import pyte
import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.terminal import attach, first_frame, read_until, resize, run_once


def render(data: bytes, cols: int = 100, rows: int = 30) -> list[str]:
    """What a terminal of this size shows after receiving ``data``."""
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(data)
    return screen.display


async def test_echo_round_trips(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    url, token = live_platform.tty_url(session), session["tty_token"]
    assert b"hi-42" in await run_once(url, token, b"echo hi-$((40+2))\n", b"hi-42")


async def test_resize_changes_stty_size(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    ws = await attach(live_platform.tty_url(session), session["tty_token"])
    try:
        await resize(ws, 123, 41)
        await ws.send(b"stty size\n")
        await read_until(ws, b"41 123")
        await resize(ws, 200, 50)
        await ws.send(b"stty size\n")
        output = await read_until(ws, b"50 200")
    finally:
        await ws.close()
    assert b"50 200" in output


async def test_reattach_shows_earlier_output(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    url, token = live_platform.tty_url(session), session["tty_token"]
    ws = await attach(url, token)
    await ws.send(b"echo marker-$((6*7))-before-detach\n")
    await read_until(ws, b"marker-42-before-detach")
    await ws.close()

    again = await attach(url, token)
    try:
        screen = await first_frame(again)
    finally:
        await again.close()
    assert b"marker-42-before-detach" in screen


async def test_reattach_reproduces_full_screen_program(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    url, token = live_platform.tty_url(session), session["tty_token"]
    ws = await attach(url, token)
    await resize(ws, 100, 30)
    await ws.send(
        b"printf 'line one\\nline two\\n' > /work/notes.txt && vim -u NONE /work/notes.txt\n"
    )
    # The switch to the alternate screen, not the command's echo: keys typed before vim is in
    # raw mode would be echoed by the shell's line discipline instead of edited.
    await read_until(ws, b"\x1b[?1049h")
    await ws.send(b"Gothird line from vim\x1b")
    await read_until(ws, b"third line from vim")
    await ws.close()

    again = await attach(url, token)
    try:
        await resize(again, 100, 30)
        snapshot = await first_frame(again)
    finally:
        await again.close()
    display = render(snapshot)
    assert display[0].rstrip() == "line one"
    assert display[1].rstrip() == "line two"
    assert display[2].rstrip() == "third line from vim"
    assert display[3].startswith("~")  # vim's empty-line filler: the editor's screen, not a log


async def test_two_clients_see_the_same_output(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    url, token = live_platform.tty_url(session), session["tty_token"]
    first, second = await attach(url, token), await attach(url, token)
    try:
        await first.send(b"echo shared-$((1+1))-output\n")
        seen_by_first, seen_by_second = await asyncio.gather(
            read_until(first, b"shared-2-output"), read_until(second, b"shared-2-output")
        )
    finally:
        await first.close()
        await second.close()
    assert b"shared-2-output" in seen_by_first
    assert b"shared-2-output" in seen_by_second


async def _close_code(url: str, token: str | None, **options) -> tuple[int, str, list]:
    ws = await attach(url, token, **options)
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 10))
    return ws.close_code, ws.close_reason, frames


async def test_bad_tokens_close_4401_before_any_output(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    other = live_platform.ready_session(shell_agent)
    url = live_platform.tty_url(session)
    for token in (None, "garbage", other["tty_token"], session["tty_token"] + "x"):
        code, reason, frames = await _close_code(url, token)
        assert (code, frames) == (4401, []), (token, reason)


async def test_cookie_sessions_need_an_allowed_origin(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    url = live_platform.tty_url(session)
    code, _, frames = await _close_code(url, None, origin="https://evil.example")
    assert (code, frames) == (4401, [])


async def test_logged_in_browser_attaches_from_the_platform_origin(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    cookie = live_platform.browser_cookie()
    output = await run_once(
        live_platform.tty_url(session),
        None,
        b"echo via-cookie-$((3*3))\n",
        b"via-cookie-9",
        origin=live_platform.url,
        additional_headers={"Cookie": cookie},
    )
    assert b"via-cookie-9" in output
    code, _, frames = await _close_code(
        live_platform.tty_url(session),
        None,
        origin="https://evil.example",
        additional_headers={"Cookie": cookie},
    )
    assert (code, frames) == (4401, [])


async def test_stopped_session_closes_4409(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    assert live_platform.api("DELETE", f"/sessions/{session['id']}").status_code < 300
    code, reason, frames = await _close_code(live_platform.tty_url(session), session["tty_token"])
    assert (code, frames) == (4409, []), reason


async def test_harness_exit_is_reported_and_a_new_attach_starts_it_again(
    live_platform, shell_agent
):
    session = live_platform.ready_session(shell_agent)
    url, token = live_platform.tty_url(session), session["tty_token"]
    ws = await attach(url, token)
    await ws.send(b"echo kept-$((4*4)) > /work/note; exit 7\n")
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 10))
    assert {"type": "exit", "code": 7} in [json.loads(f) for f in frames if isinstance(f, str)]
    assert ws.close_code == 1000

    output = await run_once(url, token, b"cat /work/note; echo done-$((1+1))\n", b"done-2")
    assert b"kept-16" in output
    assert live_platform.api("GET", f"/sessions/{session['id']}").json()["status"] == "ready"


async def test_delete_kills_every_sandbox_process_within_two_seconds(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    ws = await attach(live_platform.tty_url(session), session["tty_token"])
    await ws.send(b"sleep 1000 & sleep 1001 & echo started-$((2+2))\n")
    await read_until(ws, b"started-4")
    sandboxes = live_platform.home / "sandboxes"
    pids = _sandbox_pids(sandboxes)
    assert pids, "the sandbox's processes should be visible from the host"

    started = time.monotonic()
    assert live_platform.api("DELETE", f"/sessions/{session['id']}").status_code < 300
    while _alive(pids) and time.monotonic() - started < 2:
        await asyncio.sleep(0.02)
    assert not _alive(pids), f"still alive after 2 s: {_alive(pids)}"
    assert live_platform.api("GET", f"/sessions/{session['id']}").json()["status"] == "dead"
    with pytest.raises(ConnectionClosed):  # output printed while dying may come first
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert ws.close_code == 4503  # the sandbox went away


def _sandbox_pids(sandboxes) -> set[int]:
    """Host pids of processes whose command line mentions ``sleep 100x`` in any sandbox."""
    from pathlib import Path

    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline in (b"sleep\x001000\x00", b"sleep\x001001\x00"):
                pids.add(int(proc.name))
    return pids


def _alive(pids: set[int]) -> set[int]:
    from pathlib import Path

    alive = set()
    for pid in pids:
        try:
            state = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive
