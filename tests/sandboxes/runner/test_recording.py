"""--recording: an asciicast v2 file, size-capped, served at GET /recording."""

from __future__ import annotations

import json

from .conftest import read_until, resize_message


def parse_asciicast(data: bytes) -> tuple[dict, list[list]]:
    """Parse like asciinema does: a JSON header line, then one JSON event array per line."""
    lines = data.decode("utf-8").splitlines()
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:]]
    assert header["version"] == 2
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int)
    last = 0.0
    for event in events:
        assert len(event) == 3
        time, kind, payload = event
        assert isinstance(time, float | int) and time >= last
        assert kind in ("o", "r", "m")
        assert isinstance(payload, str)
        last = time
    return header, events


async def test_recording_holds_output_and_resizes(start_runner, workdir):
    runner = start_runner("--recording", str(workdir / "rec.cast"))
    assert runner.client.recording() is None
    runner.start_shell(cols=90, rows=30)
    ws = await runner.client.connect_tty()
    await ws.send(resize_message(100, 40))
    await ws.send("echo recorded-$((6*7)) ✓\n")
    await read_until(ws, "recorded-42 ✓".encode())
    header, events = parse_asciicast(runner.client.recording())
    assert (header["width"], header["height"]) == (90, 30)
    assert header["env"]["TERM"] == "xterm-256color"
    output = "".join(payload for _, kind, payload in events if kind == "o")
    assert "recorded-42 ✓" in output
    assert [payload for _, kind, payload in events if kind == "r"] == ["100x40"]


async def test_recording_stops_at_the_cap(start_runner, workdir):
    runner = start_runner("--recording", str(workdir / "cap.cast"), "--recording-max-bytes", "4000")
    runner.start_shell()
    ws = await runner.client.connect_tty()
    await ws.send(b"seq 1 5000; echo END-$((2*2))\n")
    await read_until(ws, b"END-4")
    data = runner.client.recording()
    _, events = parse_asciicast(data)
    assert events[-1][1] == "m"
    assert "truncated" in events[-1][2]
    assert len(data) - len(json.dumps(events[-1])) - 1 <= 4000
    assert "4999" not in "".join(payload for _, kind, payload in events if kind == "o")
