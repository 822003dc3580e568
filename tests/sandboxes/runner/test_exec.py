"""POST /exec through RunnerClient.exec."""

from __future__ import annotations

import time

import pytest

from sandboxes.runner_client import RunnerError

from .conftest import SHELL_ENV, is_alive


def test_stdout_and_stderr_are_separate_streams(runner):
    events = list(runner.client.exec(["sh", "-c", "echo to-out; echo to-err >&2"], env={}))
    assert events[-1] == {"exit_code": 0}
    assert {"stream": "stdout", "data": "to-out\n"} in events
    assert {"stream": "stderr", "data": "to-err\n"} in events
    assert len(events) == 3


def test_exit_code_is_reported(runner):
    events = list(runner.client.exec(["sh", "-c", "exit 3"], env={}))
    assert events == [{"exit_code": 3}]


def test_argv_is_not_run_through_a_shell(runner):
    events = list(runner.client.exec(["echo", "$HOME", "a;b"], env={"HOME": "/nowhere"}))
    assert events == [{"stream": "stdout", "data": "$HOME a;b\n"}, {"exit_code": 0}]


def test_output_streams_before_the_command_ends(runner):
    events = runner.client.exec(["sh", "-c", "echo first; sleep 2; echo second"], env={})
    started = time.monotonic()
    assert next(events) == {"stream": "stdout", "data": "first\n"}
    assert time.monotonic() - started < 1.5
    assert list(events) == [{"stream": "stdout", "data": "second\n"}, {"exit_code": 0}]


def test_timeout_kills_the_command_and_its_children(runner):
    started = time.monotonic()
    events = list(
        runner.client.exec(["sh", "-c", "sleep 60 & echo $!; sleep 60"], timeout=0.5, env={})
    )
    assert time.monotonic() - started < 5
    assert events[-1] == {"exit_code": None, "error": "timeout"}
    child = int(events[0]["data"])
    deadline = time.monotonic() + 2
    while is_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(child)


def test_uses_the_harness_env_and_cwd_after_start(runner):
    runner.client.start(["sleep", "60"], {**SHELL_ENV, "FOO": "from-start"}, cwd="/tmp")
    events = list(runner.client.exec(["sh", "-c", "echo $FOO; pwd; echo ${TERM:-none}"]))
    assert events[-1] == {"exit_code": 0}
    # Three writes may arrive as one event or several.
    assert "".join(e["data"] for e in events[:-1] if e["stream"] == "stdout") == (
        "from-start\n/tmp\nnone\n"
    )
    events = list(runner.client.exec(["pwd"], cwd="/"))
    assert events[0] == {"stream": "stdout", "data": "/\n"}


def test_invalid_utf8_is_replaced(runner):
    events = list(runner.client.exec(["printf", "a\\377b"], env={}))
    assert events[0] == {"stream": "stdout", "data": "a\ufffdb"}


def test_missing_program_is_400(runner):
    with pytest.raises(RunnerError) as exc:
        list(runner.client.exec(["/no/such/program"], env={}))
    assert exc.value.status == 400


@pytest.mark.parametrize("timeout", [0, -1, True])
def test_bad_timeout_is_400(runner, timeout):
    with pytest.raises(RunnerError) as exc:
        list(runner.client.exec(["true"], timeout=timeout, env={}))
    assert exc.value.status == 400
