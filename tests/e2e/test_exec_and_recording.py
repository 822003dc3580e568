"""Issue 3, end to end: ``POST /sessions/{id}/exec`` and ``GET /sessions/{id}/recording``."""

from __future__ import annotations

import json

from tests.e2e.terminal import attach, read_until


def run(live_platform, session_id: str, body: dict) -> tuple[int, list[dict]]:
    with live_platform.client.stream(
        "POST", f"/api/v1/managed_agents/sessions/{session_id}/exec", json=body
    ) as reply:
        lines = [json.loads(line) for line in reply.iter_lines() if line]
        return reply.status_code, lines


def test_exec_streams_stdout_and_stderr_then_the_exit_code(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    script = "echo to-out; echo to-err >&2; exit 3"
    status, events = run(live_platform, session["id"], {"argv": ["sh", "-c", script]})
    assert status == 200
    assert {"stream": "stdout", "data": "to-out\n"} in events
    assert {"stream": "stderr", "data": "to-err\n"} in events
    assert events[-1] == {"exit_code": 3}


def test_exec_runs_in_the_sandbox_with_the_stub_env(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    status, events = run(
        live_platform, session["id"], {"argv": ["sh", "-c", 'echo "$LAP_SESSION_ID $(hostname)"']}
    )
    output = "".join(e.get("data", "") for e in events)
    assert status == 200 and events[-1] == {"exit_code": 0}
    assert output.startswith(session["id"] + " lap-")


def test_exec_timeout_kills_the_command(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    body = {"argv": ["sh", "-c", "echo started; sleep 30"], "timeout": 0.5}
    status, events = run(live_platform, session["id"], body)
    assert status == 200
    assert events[0] == {"stream": "stdout", "data": "started\n"}
    assert events[-1] == {"exit_code": None, "error": "timeout"}


def test_exec_rejects_bad_requests_with_clear_errors(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    path = f"/sessions/{session['id']}/exec"
    missing = live_platform.api("POST", path, json={})
    assert missing.status_code == 400 and "argv" in missing.json()["error"]
    empty = live_platform.api("POST", path, json={"argv": []})
    assert empty.status_code == 400
    unknown = live_platform.api("POST", path, json={"argv": ["/no/such/program"]})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "exec_failed"
    assert unknown.json()["error"] == (
        "cannot run '/no/such/program': No such file or directory (in the sandbox)"
    )

    live_platform.api("DELETE", f"/sessions/{session['id']}")
    stopped = live_platform.api("POST", path, json={"argv": ["true"]})
    assert stopped.status_code == 409


async def test_recording_is_asciicast_and_survives_the_sandbox(live_platform, shell_agent):
    session = live_platform.ready_session(shell_agent)
    ws = await attach(live_platform.tty_url(session), session["tty_token"])
    await ws.send(b"echo recorded-$((20+3))\n")
    await read_until(ws, b"recorded-23")
    await ws.close()

    def recording() -> list:
        reply = live_platform.api("GET", f"/sessions/{session['id']}/recording")
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/x-asciicast"
        return [json.loads(line) for line in reply.text.splitlines()]

    for _ in range(2):  # live from the runner, then the copy kept after the sandbox is gone
        header, *events = recording()
        assert header["version"] == 2 and header["width"] > 0 and header["height"] > 0
        output = "".join(data for _, kind, data in events if kind == "o")
        assert "recorded-23" in output
        assert all(isinstance(t, float | int) and t >= 0 for t, _, _ in events)
        live_platform.api("DELETE", f"/sessions/{session['id']}")
