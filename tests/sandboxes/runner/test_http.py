"""The runner's HTTP side: auth, /healthz, /start, errors, listening, shutdown, Python 3.11."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from sandboxes.runner_client import RunnerClient, RunnerError

from .conftest import SHELL_ENV, TOKEN, drain_until_closed, is_alive, launch, read_until


def raw_client(runner, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(
        base_url="http://runner",
        transport=httpx.HTTPTransport(uds=runner.url.removeprefix("unix://")),
        headers=headers,
    )


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1]])
def test_requests_without_the_right_token_get_401(runner, token):
    with raw_client(runner, token) as http:
        for method, path in [("GET", "/healthz"), ("POST", "/start"), ("GET", "/recording")]:
            reply = http.request(method, path)
            assert reply.status_code == 401
            assert reply.json() == {"error": "missing or wrong runner token"}
    with pytest.raises(RunnerError) as exc:
        RunnerClient(runner.url, token or "nope").health()
    assert exc.value.status == 401


def test_health_before_and_after_start(runner):
    assert runner.client.health() == {
        "ok": True,
        "started": False,
        "exit_code": None,
        "turn": False,
    }
    pid = runner.start_shell()
    assert pid > 0 and is_alive(pid)
    assert runner.client.health() == {"ok": True, "started": True, "exit_code": None, "turn": False}


def test_start_twice_is_409(runner):
    runner.start_shell()
    with pytest.raises(RunnerError) as exc:
        runner.start_shell()
    assert exc.value.status == 409
    assert "already started" in str(exc.value)


def test_start_of_a_missing_program_is_400_and_can_be_retried(runner):
    with pytest.raises(RunnerError) as exc:
        runner.client.start(["/nonexistent/harness"], SHELL_ENV, cwd="/")
    assert exc.value.status == 400
    assert "No such file" in str(exc.value)
    assert runner.client.health()["started"] is False
    assert runner.start_shell() > 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"argv": []}', "argv must be a non-empty list"),
        (b'{"argv": "bash"}', "argv must be a non-empty list"),
        (b'{"argv": ["bash"], "env": {"A": 1}}', "env must be an object of strings"),
        (b'{"argv": ["bash"], "cols": 0}', "cols must be an integer"),
        (b'{"argv": ["bash"], "rows": true}', "rows must be an integer"),
    ],
)
def test_bad_start_bodies_are_400(runner, body, message):
    with raw_client(runner) as http:
        reply = http.post("/start", content=body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert runner.client.health()["started"] is False


def test_oversized_body_is_413(runner):
    with raw_client(runner) as http:
        reply = http.post("/exec", content=b"x" * (1024 * 1024 + 1))
        assert reply.status_code == 413
        reply = http.post("/exec", content=b'{"argv": ["true"]}' + b" " * (1024 * 1024 - 18))
        assert reply.status_code == 200  # exactly 1 MiB is accepted


def test_unknown_path_and_wrong_method(runner):
    with raw_client(runner) as http:
        assert http.get("/nope").status_code == 404
        assert http.get("/start").status_code == 405
        assert http.post("/healthz").status_code == 405
        assert http.get("/tty").status_code == 400  # not an upgrade


def test_malformed_request_line_is_400(runner):
    async def send_raw() -> bytes:
        reader, writer = await asyncio.open_unix_connection(runner.url.removeprefix("unix://"))
        writer.write(b"GARBAGE\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer

    assert asyncio.run(send_raw()).startswith(b"HTTP/1.1 400 ")


def test_recording_is_404_without_recording(runner):
    runner.start_shell()
    assert runner.client.recording() is None


def test_connection_failure_is_a_runner_error(workdir):
    client = RunnerClient(f"unix://{workdir}/missing.sock", TOKEN)
    with pytest.raises(RunnerError) as exc:
        client.health()
    assert exc.value.status is None


def test_client_rejects_bad_urls():
    for url in ("unix://relative.sock", "https://host:1", "tcp:1.2.3.4:5"):
        with pytest.raises(ValueError):
            RunnerClient(url, TOKEN)


async def test_tcp_listener(start_runner):
    runner = start_runner(listen="tcp:127.0.0.1:0")
    assert runner.url.startswith("http://127.0.0.1:")
    assert int(runner.url.rsplit(":", 1)[1]) > 0
    runner.start_shell()
    ws = await runner.client.connect_tty()
    await ws.send(b"echo over-$((10+3))\n")
    await read_until(ws, b"over-13")
    events = list(runner.client.exec(["echo", "tcp-exec"]))
    assert events == [{"stream": "stdout", "data": "tcp-exec\n"}, {"exit_code": 0}]


async def test_sigterm_kills_the_harness_and_closes_clients_with_1001(runner):
    pid = runner.start_shell()
    ws = await runner.client.connect_tty()
    await ws.send(b"sleep 300 & printf 'b%s=%s\\n' g $!\n")
    seen = await read_until(ws, b"bg=")
    seen = await read_until(ws, b"\r\n", buf=seen[seen.index(b"bg=") :])
    background = int(seen[seen.index(b"bg=") + 3 : seen.index(b"\r\n", seen.index(b"bg="))])
    assert is_alive(background)
    runner.process.send_signal(signal.SIGTERM)
    closed = await drain_until_closed(ws)
    assert closed.rcvd.code == 1001
    assert runner.process.wait(5) == 0
    assert not is_alive(pid)
    assert not is_alive(background)
    assert not Path(runner.url.removeprefix("unix://")).exists()


def test_token_is_not_passed_to_commands(runner):
    events = list(runner.client.exec(["sh", "-c", "echo ${LAP_RUNNER_TOKEN:-unset}"], env={}))
    assert events[0] == {"stream": "stdout", "data": "unset\n"}


PYTHON311 = shutil.which("python3.11")


@pytest.mark.skipif(PYTHON311 is None, reason="no python3.11 on this machine")
async def test_runs_on_python_3_11(workdir):
    # Only the runner's three dependencies, as the local driver would provide them.
    site = workdir / "site"
    site.mkdir()
    for module in ("pyte", "wcwidth", "websockets"):
        package = Path(__import__(module).__file__).parent
        (site / module).symlink_to(package)
    repo = Path(__file__).resolve().parents[3]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{repo}:{site}"}
    runner = launch(workdir, python=PYTHON311, env=env)
    try:
        runner.start_shell()
        ws = await runner.client.connect_tty()
        await ws.send(b"echo py-$((300+11))\n")
        await read_until(ws, b"py-311")
        events = list(runner.client.exec(["sh", "-c", "echo out; exit 3"]))
        assert events == [{"stream": "stdout", "data": "out\n"}, {"exit_code": 3}]
        await ws.close()
    finally:
        runner.client.close()
        assert runner.terminate() == 0
    assert "Traceback" not in runner.stderr()
