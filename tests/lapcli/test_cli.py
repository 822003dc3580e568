"""The lap CLI through click's CliRunner with the API mocked by httpx.MockTransport."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from lapcli.client import Client, session_id_from
from lapcli.config import mask
from lapcli.context import Environment
from lapcli.main import cli
from lapcli.status import ExitStatus

from .conftest import KEY, FakeApi

SESSION_ID = "5b0c7a3e-9d7f-4a53-8f0e-2f3c9b1d0a11"


def agent(name: str, n: int = 0, tui: bool = True) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": name,
        "harness_id": "shell" if tui else "opencode",
        "supports_tui": tui,
    }


def paged(items: list[dict[str, Any]], page_max: int = 50):
    def handler(request: httpx.Request) -> httpx.Response:
        limit = min(int(request.url.params.get("limit", 50)), page_max)
        offset = int(request.url.params.get("offset", 0))
        body = {"data": items[offset : offset + limit], "total": len(items), "limit": limit}
        return httpx.Response(200, json={**body, "offset": offset})

    return handler


def session(status: str = "ready", phase: str = "ready", **extra: Any) -> dict[str, Any]:
    return {
        "id": SESSION_ID,
        "agent_id": agent("shell")["id"],
        "status": status,
        "phase": phase,
        "supports_tui": True,
        **extra,
    }


def invoke(env: Any, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), obj=env, input=input, prog_name="lap")


def at_a_terminal(env: Environment) -> Environment:
    """``env`` with stdin a terminal, as terminal agents need (CliRunner's stdin is not one)."""
    env.stdin_isatty = True
    return env


# -- config ---------------------------------------------------------------------------------------


def test_login_writes_private_config_atomically(api: FakeApi, make_env, tmp_path: Path) -> None:
    api.on("GET", "/agents", paged([agent("shell")]))
    env = make_env(LAP_URL="", LAP_KEY="")
    result = invoke(env, "login", "--url", "https://lap.example.com/", "--key", "sk-abcdefgh1234")
    assert result.exit_code == 0, result.output
    directory = tmp_path / "lapconf"
    path = directory / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "url": "https://lap.example.com",
        "key": "sk-abcdefgh1234",
    }
    assert [p.name for p in directory.iterdir()] == ["config.json"]  # no temp file left behind
    assert api.requests[0].headers["authorization"] == "Bearer sk-abcdefgh1234"
    assert str(api.requests[0].url).startswith(
        "https://lap.example.com/api/v1/managed_agents/agents"
    )


def test_login_prompts_and_hides_the_key(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([]))
    env = make_env(LAP_URL="", LAP_KEY="")
    result = invoke(env, "login", input="localhost:8000\nsecret-key-987654\n")
    assert result.exit_code == 0, result.output
    assert "secret-key-987654" not in result.output
    assert "Key:" in result.output
    assert env.config.url == "http://localhost:8000"
    assert env.config.key == "secret-key-987654"


def test_login_with_a_wrong_key_saves_nothing(api: FakeApi, make_env, tmp_path: Path) -> None:
    api.on("GET", "/agents", lambda r: httpx.Response(401, json={"error": "unauthorized"}))
    result = invoke(make_env(LAP_URL="", LAP_KEY=""), "login", "--url", "http://x", "--key", "k")
    assert result.exit_code == ExitStatus.AUTH
    assert result.stderr == "lap: http://x refused this key: nothing was saved\n"
    assert not (tmp_path / "lapconf" / "config.json").exists()


def test_config_masks_the_key_and_names_the_env_override(make_env, tmp_path: Path) -> None:
    env = make_env(LAP_URL="", LAP_KEY="")
    invoke(env, "logout")
    from lapcli import config

    config.save(
        tmp_path / "lapconf", config.Config("https://saved.example", "sk-live-abcdef123456")
    )
    shown = invoke(make_env(LAP_URL="https://env.example", LAP_KEY=""), "config")
    assert shown.exit_code == 0
    assert "sk-live-abcdef123456" not in shown.output
    assert "sk-l…3456" in shown.output
    assert "https://env.example  [LAP_URL]" in shown.output


def test_logout_removes_the_config(api: FakeApi, make_env, tmp_path: Path) -> None:
    api.on("GET", "/agents", paged([]))
    env = make_env(LAP_URL="", LAP_KEY="")
    invoke(env, "login", "--url", "http://lap.test", "--key", KEY)
    assert invoke(env, "logout").output == "logged out\n"
    assert not (tmp_path / "lapconf" / "config.json").exists()
    assert invoke(env, "agents").stderr.startswith("lap: not logged in")


@pytest.mark.parametrize(
    ("key", "shown"), [("", "(none)"), ("short", "********"), ("sk-0123456789abcdef", "sk-0…cdef")]
)
def test_mask(key: str, shown: str) -> None:
    assert mask(key) == shown


def test_env_overrides_the_saved_config(api: FakeApi, make_env, tmp_path: Path) -> None:
    from lapcli import config

    config.save(tmp_path / "lapconf", config.Config("http://saved.test", "saved-key-123456"))
    api.on("GET", "/agents", paged([]))
    invoke(make_env(LAP_URL="http://env.test", LAP_KEY="env-key-1234567"), "agents")
    assert api.requests[0].url.host == "env.test"
    assert api.requests[0].headers["authorization"] == "Bearer env-key-1234567"


def test_login_leaves_the_mode_of_an_existing_directory_alone(
    api: FakeApi, make_env, tmp_path: Path
) -> None:
    """LAP_CONFIG_DIR may be a directory of the user's (even $HOME): only one lap creates is
    made 0700; the key file is 0600 either way."""
    api.on("GET", "/agents", paged([]))
    directory = tmp_path / "mine"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    result = invoke(
        make_env(LAP_CONFIG_DIR=str(directory)), "login", "--url", "http://x", "--key", "k"
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "config.json").stat().st_mode) == 0o600


def saved_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lapconf" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ['{"url": "http://lap.test", "key": ', "[]", ""])
def test_a_corrupt_config_is_named_not_taken_for_no_login(
    api: FakeApi, make_env, tmp_path: Path, text: str
) -> None:
    path = saved_config(tmp_path, text)
    for args in (["agents"], ["config"]):
        result = invoke(make_env(LAP_URL="", LAP_KEY=""), *args)
        assert result.exit_code == ExitStatus.ERROR
        assert result.stderr == (
            f"lap: {path} is corrupt (not a JSON object with url and key); "
            "fix it, or replace it: lap login\n"
        )
    assert path.read_text() == text  # left for the user to look at


def test_a_corrupt_config_does_not_matter_when_the_environment_has_both(
    api: FakeApi, make_env, tmp_path: Path
) -> None:
    saved_config(tmp_path, "{oops")
    api.on("GET", "/agents", paged([agent("shell")]))
    assert invoke(make_env(), "agents").exit_code == 0


def test_login_replaces_a_corrupt_config(api: FakeApi, make_env, tmp_path: Path) -> None:
    path = saved_config(tmp_path, "{oops")
    api.on("GET", "/agents", paged([]))
    result = invoke(make_env(LAP_URL="", LAP_KEY=""), "login", input="lap.test\nsk-abc\n")
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text()) == {"url": "https://lap.test", "key": "sk-abc"}


def test_an_unreadable_config_is_one_line(make_env, tmp_path: Path) -> None:
    path = tmp_path / "lapconf" / "config.json"
    path.mkdir(parents=True)  # reading it fails even as root
    result = invoke(make_env(LAP_URL="", LAP_KEY=""), "agents")
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr == f"lap: cannot read {path}: Is a directory\n"


def test_a_config_dir_that_is_a_file_is_one_line(api: FakeApi, make_env, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("mine")
    api.on("GET", "/agents", paged([]))
    env = make_env(LAP_CONFIG_DIR=str(not_a_dir))
    login = invoke(env, "login", "--url", "http://lap.test", "--key", "k")
    assert login.exit_code == ExitStatus.ERROR
    assert login.stderr == (
        f"lap: cannot save the login to {not_a_dir / 'config.json'}: Not a directory "
        "(set LAP_CONFIG_DIR to a writable directory)\n"
    )
    logout = invoke(env, "logout")
    assert logout.exit_code == ExitStatus.ERROR
    assert logout.stderr == f"lap: cannot remove {not_a_dir / 'config.json'}: Not a directory\n"
    assert not_a_dir.read_text() == "mine"


def test_login_into_a_read_only_directory_keeps_the_old_config(
    api: FakeApi, make_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = saved_config(tmp_path, '{"url": "http://old.test", "key": "old-key"}')
    api.on("GET", "/agents", paged([]))

    def read_only(*args: Any, **kwargs: Any) -> Any:  # what a chmod 555 does to non-root users
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lapcli.config.tempfile.mkstemp", read_only)
    result = invoke(
        make_env(LAP_URL="", LAP_KEY=""), "login", "--url", "http://new.test", "--key", "k"
    )
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr == (
        f"lap: cannot save the login to {path}: Permission denied "
        "(set LAP_CONFIG_DIR to a writable directory)\n"
    )
    assert json.loads(path.read_text()) == {"url": "http://old.test", "key": "old-key"}


# -- agents, resolution, errors -------------------------------------------------------------------

MANY = [agent(f"agent-{n:03d}", n) for n in range(120)] + [agent("shell", 500)]


def test_agents_lists_all_three_pages(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged(MANY))
    result = invoke(make_env(), "agents")
    assert result.exit_code == 0, result.output
    offsets = [r.url.params["offset"] for r in api.calls("GET", "/agents")]
    assert offsets == ["0", "50", "100"]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "HARNESS", "MODE", "ID"]
    assert len(lines) == 1 + 121
    assert lines[-1].split() == ["shell", "shell", "tui", MANY[-1]["id"]]  # whole, usable


def test_open_finds_an_agent_on_the_last_page_by_name_and_by_id(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged(MANY))
    api.on("POST", "/agents/00000000-0000-4000-8000-000000000119/session", session("failed"))
    by_name = invoke(at_a_terminal(make_env()), "open", "agent-119")
    by_id = invoke(at_a_terminal(make_env()), "open", "00000000-0000-4000-8000-000000000119")
    assert len(api.calls("POST", "/agents/00000000-0000-4000-8000-000000000119/session")) == 2
    assert by_name.exit_code == by_id.exit_code == ExitStatus.SESSION_FAILED


def test_unknown_agent_lists_close_names_in_one_line(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([*MANY, agent("shell-2", 501)]))
    result = invoke(make_env(), "shel")
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert result.stderr == "lap: no agent named 'shel'; did you mean: shell, shell-2\n"
    assert not api.calls("POST", "/agents/00000000-0000-4000-8000-000000000500/session")


def test_unknown_agent_without_close_names_points_at_lap_agents(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell")]))
    result = invoke(make_env(), "open", "zzzzzz")
    assert result.stderr == "lap: no agent named 'zzzzzz' (list them with: lap agents)\n"


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


@pytest.mark.parametrize(
    ("response", "status", "line"),
    [
        (
            httpx.Response(401, json={"error": "unauthorized"}),
            ExitStatus.AUTH,
            "login expired or wrong key (run: lap login)",
        ),
        (
            httpx.Response(400, json={"error": "limit must be 1-200"}),
            ExitStatus.ERROR,
            "limit must be 1-200",
        ),
        (
            httpx.Response(400, json={"error": {"name": ["required"]}}),
            ExitStatus.ERROR,
            "name: required",
        ),
        (
            httpx.Response(503, text="<html>bad gateway</html>"),
            ExitStatus.ERROR,
            "GET /api/v1/managed_agents/agents: 503 Service Unavailable (try again later)",
        ),
        (
            httpx.Response(500, json={"error": "internal error", "code": "internal"}),
            ExitStatus.ERROR,
            "internal error (HTTP 500; try again later)",
        ),
        (
            httpx.Response(503, json={"error": "database unavailable", "code": "unavailable"}),
            ExitStatus.ERROR,
            "database unavailable (HTTP 503; try again later)",
        ),
        (
            httpx.Response(403, json={"error": "staff only"}),
            ExitStatus.AUTH,
            "staff only",
        ),
        (refuse, ExitStatus.UNREACHABLE, "cannot reach http://lap.test"),
    ],
)
def test_errors_are_one_line_with_a_mapped_status(
    api: FakeApi, make_env, response: Any, status: ExitStatus, line: str
) -> None:
    api.on("GET", "/agents", response if callable(response) else lambda r: response)
    result = invoke(make_env(), "agents")
    assert result.exit_code == status
    assert result.stderr == f"lap: {line}\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("response", "described"),
    [
        (
            httpx.Response(200, html="<html>Django admin</html>"),
            "HTTP 200, text/html; charset=utf-8",
        ),
        (httpx.Response(302, headers={"location": "/login/"}), "HTTP 302, no content type"),
        (httpx.Response(200, json="ok"), "HTTP 200, application/json"),
    ],
)
def test_login_to_something_else_than_a_platform_is_one_line(
    api: FakeApi, make_env, response: httpx.Response, described: str
) -> None:
    api.routes[("GET", "/admin/api/v1/managed_agents/agents")] = lambda r: response
    env = make_env(LAP_URL="", LAP_KEY="")
    result = invoke(env, "login", "--url", "http://lap.test/admin/", "--key", "k")
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr == (
        "lap: http://lap.test/admin/api/v1/managed_agents/agents did not answer like a LAP "
        f"platform ({described})\n"
    )
    assert not env.config.url  # nothing saved


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "page",
    [
        {"data": "abc"},
        {"data": [1, 2]},
        {"data": {"id": "x"}},
        [1, 2],
        {"data": [agent("shell")], "total": "many"},
    ],
)
def test_a_list_of_the_wrong_shape_is_one_line(api: FakeApi, make_env, page: Any) -> None:
    api.on("GET", "/agents", page)
    result = invoke(make_env(), "agents")
    if isinstance(page, dict) and page.get("total") == "many":
        assert result.exit_code == 0  # no usable total: the one page there is
        assert len(api.requests) == 1
        return
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr == (
        "lap: http://lap.test/api/v1/managed_agents/agents did not answer like a LAP platform "
        "(HTTP 200, application/json)\n"
    )


def test_a_chat_history_of_the_wrong_shape_is_one_line(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("helper", 500, tui=False)]))
    bring_up(api, [session(supports_tui=False)])
    api.on("GET", f"/sessions/{SESSION_ID}/messages", {"data": "hello"})
    result = invoke(make_env(), "helper", input="")
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr.splitlines()[-1] == (
        f"lap: http://lap.test/api/v1/managed_agents/sessions/{SESSION_ID}/messages did not "
        "answer like a LAP platform (HTTP 200, application/json)"
    )


@pytest.mark.timeout(10)
def test_a_server_that_ignores_offset_is_read_once(api: FakeApi, make_env) -> None:
    """Without a total there is no telling where the list ends: one page, not an endless
    loop over the same page."""
    api.on("GET", "/agents", {"data": [agent("shell")]})
    result = invoke(make_env(), "agents")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("args", "routes"),
    [
        (["shell"], {("POST", "/agents/a/session"): {"status": "creating"}}),
        (["exec", "shell", "--", "true"], {("POST", "/agents/a/session"): {"id": ""}}),
        (["attach", SESSION_ID], {("GET", f"/sessions/{SESSION_ID}"): {"status": "ready"}}),
    ],
)
def test_a_session_without_an_id_is_one_line(
    api: FakeApi, make_env, args: list[str], routes: dict[tuple[str, str], Any]
) -> None:
    api.on("GET", "/agents", paged([{"id": "a", "name": "shell", "supports_tui": True}]))
    for (method, path), body in routes.items():
        api.on(method, path, body)
    result = invoke(at_a_terminal(make_env()), *args)
    assert result.exit_code == ExitStatus.ERROR
    assert "did not answer like a LAP platform (HTTP 200, application/json)" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("url", "status", "line"),
    [
        ("http://[::1", ExitStatus.USAGE, "http://[::1 is not a valid URL (Invalid port: ':1')"),
        ("[::1", ExitStatus.USAGE, "https://[::1 is not a valid URL (Invalid port: ':1')"),
        ("notaurl", ExitStatus.UNREACHABLE, "cannot reach https://notaurl"),
    ],
)
def test_login_names_the_url_it_could_not_use(
    api: FakeApi, make_env, url: str, status: ExitStatus, line: str
) -> None:
    api.on("GET", "/agents", refuse)
    result = invoke(make_env(LAP_URL="http://saved.test"), "login", "--url", url, "--key", "k")
    assert result.exit_code == status
    assert result.stderr == f"lap: {line}\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("http://[::1", "http://[::1 is not a valid URL (Invalid port: ':1')"),
        ("ftp://lap.test", "ftp://lap.test is not a valid URL (it must start http:// or https://)"),
        ("http://", "http:// is not a valid URL (it has no host name)"),
        ("https:///api", "https:///api is not a valid URL (it has no host name)"),
        ("https://:8000/", "https://:8000 is not a valid URL (it has no host name)"),
    ],
)
def test_an_invalid_lap_url_is_one_line_and_sends_nothing(
    api: FakeApi, make_env, url: str, line: str
) -> None:
    for args in (["agents"], ["login", "--url", url, "--key", "k"]):
        result = invoke(make_env(LAP_URL=url), *args)
        assert result.exit_code == ExitStatus.USAGE
        assert result.stderr == f"lap: {line}\n"
    assert not api.requests


def test_a_blank_lap_url_is_no_url(make_env) -> None:
    result = invoke(make_env(LAP_URL="  "), "agents")
    assert result.exit_code == ExitStatus.AUTH
    assert result.stderr.startswith("lap: not logged in")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["attach"], "missing argument 'SESSION' (usage: lap attach --help)"),
        (["stop", "a", "b"], "got unexpected extra argument (b) (usage: lap stop --help)"),
        (["--bogus"], "no such option '--bogus' (usage: lap --help)"),
        (["--resume"], "option '--resume' requires an argument (usage: lap --help)"),
        (
            ["sessions", "--agent"],
            "option '--agent' requires an argument (usage: lap sessions --help)",
        ),
        (["agents", "--all"], "no such option '--all' (usage: lap agents --help)"),
        (
            ["exec", "--timeout", "soon", "shell", "--", "true"],
            "invalid value for '--timeout': 'soon' is not a valid float (usage: lap exec --help)",
        ),
        (
            ["exec", "--timeout", "0", "shell", "--", "true"],
            "invalid value for '--timeout': 0.0 is not a number of seconds above 0 "
            "(usage: lap exec --help)",
        ),
        (["exec", "shell"], "no command given: put it after -- (usage: lap exec --help)"),
        (["exec"], "give an AGENT (or --session ID) and a command (usage: lap exec --help)"),
        (["login", "--url"], "option '--url' requires an argument (usage: lap login --help)"),
    ],
)
def test_usage_errors_are_one_line(api: FakeApi, make_env, args: list[str], line: str) -> None:
    result = invoke(make_env(), *args)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == f"lap: {line}\n"
    assert not api.requests


@pytest.mark.parametrize(
    ("stdin_isatty", "status", "line"),
    [
        (True, ExitStatus.INTERRUPTED, "login cancelled; nothing was saved"),
        (
            False,
            ExitStatus.USAGE,
            "no platform URL given on stdin (use: lap login --url URL --key KEY)",
        ),
    ],
)
def test_login_cancelled_at_the_prompt_is_one_line(
    api: FakeApi, make_env, tmp_path: Path, stdin_isatty: bool, status: ExitStatus, line: str
) -> None:
    """click turns Ctrl-C and Ctrl-D (or the end of piped input) at a prompt into Abort."""
    env = make_env(LAP_URL="", LAP_KEY="")
    env.stdin_isatty = stdin_isatty
    result = invoke(env, "login", input="")
    assert result.exit_code == status
    assert result.stderr.splitlines()[-1] == f"lap: {line}"
    assert "Aborted" not in result.output
    assert not (tmp_path / "lapconf" / "config.json").exists()


# -- sessions, stop ----------------------------------------------------------------------------


def test_sessions_for_one_agent_passes_the_filter(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500), agent("other", 7)]))
    api.on("GET", "/sessions", [session()])  # a server answering with a bare array
    result = invoke(make_env(), "sessions", "--agent", "shell")
    assert api.calls("GET", "/sessions")[0].url.params["agent_id"] == agent("shell", 500)["id"]
    assert result.stdout == "no sessions\n"  # the one returned belongs to another agent id
    api.on("GET", "/sessions", [session(agent_id=agent("shell", 500)["id"])])
    listed = invoke(make_env(), "sessions", "--agent", "shell")
    assert f"{SESSION_ID}  shell  ready" in listed.stdout


@pytest.mark.parametrize(
    ("status", "phase", "shown"),
    [
        ("creating", "starting_vault", "starting_vault"),
        ("failed", "cloning_repo", "cloning_repo"),
        ("ready", "ready", ""),
        ("dead", "ready", ""),
    ],
)
def test_sessions_show_the_phase_only_while_it_is_news(
    api: FakeApi, make_env, status: str, phase: str, shown: str
) -> None:
    api.on("GET", "/agents", paged([agent("shell")]))
    api.on("GET", "/sessions", [session(status=status, phase=phase)])
    header, row = invoke(make_env(), "sessions").stdout.splitlines()
    column = slice(header.index("PHASE"), header.index("CREATED"))
    assert row[column].strip() == shown
    assert status in row


def test_stop_deletes_the_session_given_as_url(api: FakeApi, make_env) -> None:
    api.on("DELETE", f"/sessions/{SESSION_ID}", {"id": SESSION_ID, "status": "deleted"})
    result = invoke(make_env(), "stop", f"https://lap.example.com/sessions/{SESSION_ID}")
    assert result.stdout == f"session {SESSION_ID}: deleted\n"


@pytest.mark.parametrize(
    ("args", "method", "path"),
    [
        (["stop", "../agents/victim"], "DELETE", "/sessions/..%2Fagents%2Fvictim"),
        (["attach", "../agents/victim"], "GET", "/sessions/..%2Fagents%2Fvictim"),
        (["--resume", "x?y#z"], "GET", "/sessions/x%3Fy%23z"),
        (
            ["exec", "--session", "../agents/v", "--", "true"],
            "POST",
            "/sessions/..%2Fagents%2Fv/exec",
        ),
    ],
)
def test_user_given_ids_stay_one_path_segment(
    api: FakeApi, make_env, args: list[str], method: str, path: str
) -> None:
    result = invoke(make_env(), *args)
    assert result.exit_code == ExitStatus.NOT_FOUND, result.output
    sent = [(r.method, r.url.raw_path.decode()) for r in api.requests]
    assert sent == [(method, "/api/v1/managed_agents" + path)]


def test_agent_ids_from_the_server_are_escaped_too(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([{"id": "../sessions/x", "name": "odd"}]))
    invoke(make_env(), "exec", "odd", "--", "true")
    created = api.requests[-1]
    assert created.url.raw_path == b"/api/v1/managed_agents/agents/..%2Fsessions%2Fx/session"


@pytest.mark.parametrize(
    "args", [["attach", ""], ["stop", ""], ["--resume", ""], ["exec", "--session", "", "true"]]
)
def test_an_empty_session_id_is_a_usage_error(api: FakeApi, make_env, args: list[str]) -> None:
    result = invoke(make_env(), *args)
    assert result.exit_code == ExitStatus.USAGE
    assert "give a session id (list them with: lap sessions)" in result.stderr
    assert not api.requests


@pytest.mark.parametrize(
    "args",
    [
        ["attach", "shell"],
        ["stop", "shell"],
        ["--resume", "shell"],
        ["exec", "--session", "shell", "ls"],
    ],
)
def test_an_unknown_session_says_how_to_find_one(api: FakeApi, make_env, args: list[str]) -> None:
    """Also what an agent's name or id given for a session gets (ids of the wrong kind)."""
    api.on(
        "GET" if args[0] in ("attach", "--resume") else "DELETE" if args[0] == "stop" else "POST",
        "/sessions/shell" + ("/exec" if args[0] == "exec" else ""),
        lambda r: httpx.Response(404, json={"error": "session 'shell' not found"}),
    )
    result = invoke(at_a_terminal(make_env()), *args)
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert result.stderr == "lap: session 'shell' not found (list them with: lap sessions)\n"


@pytest.mark.parametrize("session_id", [".", ".."])
def test_a_dot_session_id_is_refused_before_any_request(
    api: FakeApi, make_env, session_id: str
) -> None:
    result = invoke(make_env(), "stop", session_id)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == f"lap: not a valid id: {session_id!r}\n"
    assert not api.requests


# -- open: progress, failure, chat ----------------------------------------------------------------


def bring_up(api: FakeApi, states: list[dict[str, Any]]) -> None:
    """POST returns states[0]; each GET of the session returns the next state."""
    remaining = list(states)
    api.on("POST", "/agents/00000000-0000-4000-8000-000000000500/session", remaining.pop(0))
    api.on(
        "GET",
        f"/sessions/{SESSION_ID}",
        lambda r: httpx.Response(
            200, json=remaining.pop(0) if len(remaining) > 1 else remaining[0]
        ),
    )


def test_open_prints_one_plain_line_per_phase_without_a_tty(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(
        api,
        [
            session("creating", "claiming_warm"),
            session("creating", "creating_sandbox"),
            session("creating", "creating_sandbox"),
            session("creating", "starting_harness"),
            session(
                "failed", "starting_harness", failure_reason="image pull failed: no such image"
            ),
        ],
    )
    result = invoke(at_a_terminal(make_env()), "shell")
    assert result.exit_code == ExitStatus.SESSION_FAILED
    phases = [line.split(" (")[0].strip() for line in result.stderr.splitlines()[1:-1]]
    assert phases == ["claiming_warm", "creating_sandbox", "starting_harness"]
    assert "\x1b" not in result.stderr  # no spinner escape codes when stderr is not a TTY
    assert result.stderr.splitlines()[-1] == (
        f"lap: session {SESSION_ID} failed: image pull failed: no such image"
    )


def test_a_terminal_agent_without_a_terminal_on_stdin_starts_nothing(
    api: FakeApi, make_env
) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    result = invoke(make_env(), "shell")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "lap: this session is a terminal and stdin is not one "
        "(run it from a terminal, or use: lap exec AGENT -- CMD)\n"
    )
    assert not api.calls("POST", "/agents/00000000-0000-4000-8000-000000000500/session")


@pytest.mark.parametrize("args", [["attach", SESSION_ID], ["--resume", SESSION_ID]])
def test_attach_without_a_terminal_on_stdin_fails_at_once(
    api: FakeApi, make_env, args: list[str]
) -> None:
    api.on("GET", f"/sessions/{SESSION_ID}", session())
    result = invoke(make_env(), *args)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith("lap: this session is a terminal and stdin is not one")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("ended", "line"),
    [
        (session("dead", failure_reason=""), f"session {SESSION_ID} was stopped"),
        (session("dead", failure_reason=None), f"session {SESSION_ID} was stopped"),
        (
            session("dead", failure_reason="idle timeout"),
            f"session {SESSION_ID} is dead: idle timeout",
        ),
        (
            session("failed", failure_reason="harness exited"),
            f"session {SESSION_ID} failed: harness exited",
        ),
        (session("failed", failure_reason=""), f"session {SESSION_ID} failed"),
    ],
)
def test_attach_to_an_ended_session_says_how_it_ended(
    api: FakeApi, make_env, ended: dict[str, Any], line: str
) -> None:
    api.on("GET", f"/sessions/{SESSION_ID}", ended)
    result = invoke(at_a_terminal(make_env()), "attach", SESSION_ID)
    assert result.exit_code == ExitStatus.SESSION_FAILED
    assert result.stderr == f"lap: {line}\n"


def sse(*frames: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(f)}\n\n".encode() for f in frames)


def test_chat_agent_opens_a_repl_that_streams_replies(api: FakeApi, make_env) -> None:
    chat_agent = agent("helper", 500, tui=False)
    api.on("GET", "/agents", paged([chat_agent]))
    bring_up(
        api,
        [session("creating", "creating_sandbox", supports_tui=False), session(supports_tui=False)],
    )
    part = {"type": "text", "id": "p1"}
    stream_frames(
        api,
        [
            {"type": "ready"},
            event("message.part.updated", part={**part, "text": "Hel"}),
            event("message.part.updated", part={**part, "text": "Hello!"}),
            {"type": "done"},
        ],
    )
    result = invoke(make_env(), "helper", input="hi there\n")
    assert result.exit_code == 0, result.output
    sent = api.calls("POST", f"/sessions/{SESSION_ID}/message_stream")
    assert [json.loads(r.content) for r in sent] == [{"text": "hi there"}]
    assert "Hello!\n" in result.stdout
    assert "Hel" + "Hello!" not in result.stdout  # cumulative part text is not repeated
    assert f"lap attach {SESSION_ID}" in result.stderr


def event(kind: str, **properties: Any) -> dict[str, Any]:
    """A ``harness_event`` frame of the platform's message stream."""
    return {"type": "harness_event", "event": {"type": kind, "properties": properties}}


def stream_frames(api: FakeApi, frames: list[dict[str, Any]]) -> None:
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/message_stream",
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=sse(*frames)
        ),
    )


def test_chat_streams_text_not_reasoning_and_reports_an_abort(api: FakeApi, make_env) -> None:
    """The platform's frames: parts start empty, grow by deltas, settle whole; done carries
    the message (an aborted turn has ``info.error``)."""
    api.on("GET", "/agents", paged([agent("helper", 500, tui=False)]))
    bring_up(api, [session(supports_tui=False)])
    text = {"id": "t1", "type": "text", "text": ""}
    thought = {"id": "r1", "type": "reasoning", "text": ""}
    frames = [
        {"type": "ready"},
        event("message.part.updated", part=thought),
        event("message.part.delta", partID="r1", field="text", delta="pondering"),
        event("message.part.updated", part=text),
        event("message.part.delta", partID="t1", field="text", delta="Hel"),
        event("message.part.delta", partID="t1", field="text", delta="lo"),
        event("message.part.updated", part={**text, "text": "Hello"}),
        {
            "type": "done",
            "message": {
                "info": {"error": {"name": "MessageAbortedError"}},
                "parts": [{**thought, "text": "pondering"}, {**text, "text": "Hello there"}],
            },
        },
    ]
    stream_frames(api, frames)
    result = invoke(make_env(), "helper", input="hi\n")
    assert result.exit_code == 0, result.output
    assert "Hello there\n" in result.stdout
    assert "pondering" not in result.stdout
    assert "HelloHello" not in result.stdout
    assert "[aborted]" in result.stderr


def test_chat_shows_the_conversation_so_far_before_the_prompt(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("helper", 500, tui=False)]))
    bring_up(api, [session(supports_tui=False)])
    aborted = {"name": "MessageAbortedError"}
    api.on(
        "GET",
        f"/sessions/{SESSION_ID}/messages",
        [
            {"info": {"role": "user"}, "parts": [{"type": "text", "text": "What is 6*7?"}]},
            {"info": {"role": "assistant"}, "parts": [{"type": "text", "text": "42."}]},
            {"info": {"role": "user"}, "parts": [{"type": "text", "text": "Write a poem."}]},
            {"info": {"role": "assistant", "error": aborted}, "parts": []},
        ],
    )
    result = invoke(make_env(), "helper", input="")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("you> What is 6*7?\n42.\nyou> Write a poem.\n")
    assert "[aborted]" in result.stderr


def test_chat_says_when_the_harness_retries_the_model(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("helper", 500, tui=False)]))
    bring_up(api, [session(supports_tui=False)])
    retry = {"type": "retry", "attempt": 2, "message": "Cannot connect to API", "next": 0}
    text = {"id": "t1", "type": "text", "text": "Back."}
    frames = [
        {"type": "ready"},
        event("session.status", status={"type": "busy"}),
        event("session.status", status=retry),
        event("session.status", status={**retry, "attempt": 3, "maxAttempts": 10}),
        event("message.part.updated", part=text),
        {"type": "done", "message": {"info": {}, "parts": [text]}},
    ]
    stream_frames(api, frames)
    result = invoke(make_env(), "helper", input="hi\n")
    assert result.exit_code == 0, result.output
    assert "Back.\n" in result.stdout
    assert "retrying" not in result.stdout
    notices = [line for line in result.stderr.splitlines() if "retrying" in line]
    assert notices == [
        "[model request failed, retrying (attempt 2): Cannot connect to API]",
        "[model request failed, retrying (attempt 3 of 10): Cannot connect to API]",
    ]


# -- exec ---------------------------------------------------------------------------------------


def ndjson(*frames: dict[str, Any]) -> httpx.Response:
    body = b"".join(json.dumps(f).encode() + b"\n" for f in frames)
    return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)


def test_exec_streams_output_and_exits_with_the_command_code(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session("creating", "creating_sandbox"), session()])
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/exec",
        lambda r: ndjson(
            {"stream": "stdout", "data": "out 1\n"},
            {"stream": "stderr", "data": "oops\n"},
            {"stream": "stdout", "data": "out 2\n"},
            {"exit_code": 7},
        ),
    )
    api.on("DELETE", f"/sessions/{SESSION_ID}", {"id": SESSION_ID, "status": "deleted"})
    result = invoke(make_env(), "exec", "--timeout", "30", "shell", "--", "sh", "-c", "exit 7")
    assert result.exit_code == 7
    assert result.stdout == "out 1\nout 2\n"
    assert "oops\n" in result.stderr
    body = json.loads(api.calls("POST", f"/sessions/{SESSION_ID}/exec")[0].content)
    assert body == {"argv": ["sh", "-c", "exit 7"], "timeout": 30.0}
    assert len(api.calls("DELETE", f"/sessions/{SESSION_ID}")) == 1


def test_exec_keep_leaves_the_session_running(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    api.on("POST", f"/sessions/{SESSION_ID}/exec", lambda r: ndjson({"exit_code": 0}))
    result = invoke(make_env(), "exec", "--keep", "shell", "true")
    assert result.exit_code == 0
    assert not api.calls("DELETE", f"/sessions/{SESSION_ID}")


def test_exec_in_an_existing_session_neither_creates_nor_stops(api: FakeApi, make_env) -> None:
    api.on("POST", f"/sessions/{SESSION_ID}/exec", lambda r: ndjson({"exit_code": 3}))
    result = invoke(make_env(), "exec", "--session", SESSION_ID, "--", "false", "-x")
    assert result.exit_code == 3
    assert json.loads(api.requests[0].content)["argv"] == ["false", "-x"]
    assert [r.method for r in api.requests] == ["POST"]


def test_exec_of_a_program_that_cannot_start_exits_127_like_a_shell(api: FakeApi, make_env) -> None:
    reason = "cannot run 'nope': No such file or directory (in the sandbox)"
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/exec",
        lambda r: httpx.Response(400, json={"error": reason, "code": "exec_failed"}),
    )
    result = invoke(make_env(), "exec", "--session", SESSION_ID, "--", "nope")
    assert result.exit_code == ExitStatus.CANNOT_RUN == 127
    assert result.stderr.endswith(f"lap: {reason}\n")


@pytest.mark.parametrize(
    "args", [["shell"], ["shell", "--"], ["--", "shell", "--"], ["--session", SESSION_ID, "--"]]
)
def test_exec_without_a_command_fails_before_starting_a_session(
    api: FakeApi, make_env, args: list[str]
) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    result = invoke(make_env(), "exec", *args)
    assert result.exit_code == ExitStatus.USAGE
    assert "no command given: put it after --" in result.stderr
    assert not api.requests  # no session was created, so none is left running


def test_exec_timeout_exits_124_and_stops_the_session(api: FakeApi, make_env) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/exec",
        lambda r: ndjson(
            {"stream": "stdout", "data": "tick\n"}, {"exit_code": None, "error": "timeout"}
        ),
    )
    api.on("DELETE", f"/sessions/{SESSION_ID}", {"id": SESSION_ID, "status": "deleted"})
    result = invoke(make_env(), "exec", "--timeout", "2", "shell", "--", "sleep", "9")
    assert result.exit_code == ExitStatus.TIMEOUT == 124
    assert result.stdout == "tick\n"
    assert result.stderr.endswith("lap: command timed out after 2s\n")
    assert len(api.calls("DELETE", f"/sessions/{SESSION_ID}")) == 1


def test_exec_keeps_the_commands_status_when_stopping_the_session_fails(
    api: FakeApi, make_env
) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    api.on("POST", f"/sessions/{SESSION_ID}/exec", lambda r: ndjson({"exit_code": 3}))
    api.on(
        "DELETE",
        f"/sessions/{SESSION_ID}",
        lambda r: httpx.Response(
            503, json={"error": "database unavailable", "code": "unavailable"}
        ),
    )
    result = invoke(make_env(), "exec", "shell", "--", "false")
    assert result.exit_code == 3
    assert result.stderr.endswith(
        f"lap: could not stop session {SESSION_ID} (database unavailable (HTTP 503; try again "
        f"later)); it may still be running: lap stop {SESSION_ID}\n"
    )


def test_exec_timed_out_by_the_platforms_own_limit_says_so(api: FakeApi, make_env) -> None:
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/exec",
        lambda r: ndjson({"exit_code": None, "error": "timeout"}),
    )
    result = invoke(make_env(), "exec", "--session", SESSION_ID, "--", "sleep", "9999")
    assert result.exit_code == ExitStatus.TIMEOUT
    assert result.stderr == (
        "lap: command timed out at the platform's limit (give a longer one with --timeout)\n"
    )


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_exec_timeout_must_be_positive(api: FakeApi, make_env, timeout: str) -> None:
    result = invoke(make_env(), "exec", "--timeout", timeout, "shell", "--", "true")
    assert result.exit_code == ExitStatus.USAGE
    assert "--timeout" in result.stderr
    assert not api.requests  # no session was started


@pytest.mark.parametrize(
    ("frame", "status", "line"),
    [
        ({"exit_code": -9}, 137, None),  # killed by SIGKILL, as a shell says it
        ({"exit_code": 255}, 255, None),
        ({"exit_code": None}, ExitStatus.ERROR, "exec ended with no usable exit code (None)"),
        ({"exit_code": 256}, ExitStatus.ERROR, "exec ended with no usable exit code (256)"),
        ({"exit_code": "3"}, ExitStatus.ERROR, "exec ended with no usable exit code ('3')"),
    ],
)
def test_exec_exit_codes_are_shell_style_or_an_error(
    api: FakeApi, make_env, frame: dict[str, Any], status: int, line: str | None
) -> None:
    api.on("POST", f"/sessions/{SESSION_ID}/exec", lambda r: ndjson(frame))
    result = invoke(make_env(), "exec", "--session", SESSION_ID, "--", "x")
    assert result.exit_code == status
    assert result.stderr == (f"lap: {line}\n" if line else "")


def cut_after(first: bytes) -> Any:
    """A response body that sends ``first``, then loses the connection."""

    def body() -> Any:
        yield first
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    return body()


@pytest.mark.parametrize(
    ("response", "line"),
    [
        (
            lambda r: ndjson({"stream": "stdout", "data": "x"}),
            "exec ended without an exit code (the connection was cut)",
        ),
        (
            lambda r: httpx.Response(
                200, content=cut_after(b'{"stream": "stdout", "data": "x"}\n')
            ),
            "the connection to http://lap.test was cut (peer closed connection without sending "
            "complete body); try again",
        ),
    ],
)
def test_exec_cut_short_is_a_lost_connection_and_still_stops_the_session(
    api: FakeApi, make_env, response: Any, line: str
) -> None:
    api.on("GET", "/agents", paged([agent("shell", 500)]))
    bring_up(api, [session()])
    api.on("POST", f"/sessions/{SESSION_ID}/exec", response)
    api.on("DELETE", f"/sessions/{SESSION_ID}", {"id": SESSION_ID, "status": "deleted"})
    result = invoke(make_env(), "exec", "shell", "--", "yes")
    assert result.exit_code == ExitStatus.CONNECTION_LOST
    assert result.stdout == "x"
    assert result.stderr.endswith(f"lap: {line}\n")
    assert len(api.calls("DELETE", f"/sessions/{SESSION_ID}")) == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
    ],
)
def test_a_connection_cut_mid_answer_is_one_line(api: FakeApi, make_env, error: Exception) -> None:
    def cut(request: httpx.Request) -> httpx.Response:
        raise error

    api.on("GET", "/agents", cut)
    result = invoke(make_env(), "agents")
    assert result.exit_code == ExitStatus.CONNECTION_LOST
    assert result.stderr == f"lap: the connection to http://lap.test was cut ({error}); try again\n"


def test_exec_output_that_is_not_ndjson_is_one_line(api: FakeApi, make_env) -> None:
    api.on(
        "POST",
        f"/sessions/{SESSION_ID}/exec",
        lambda r: httpx.Response(200, html="<html>\n<p>Sign in</p>\n</html>"),
    )
    result = invoke(make_env(), "exec", "--session", SESSION_ID, "--", "ls")
    assert result.exit_code == ExitStatus.ERROR
    assert result.stderr.endswith(
        f"lap: http://lap.test/api/v1/managed_agents/sessions/{SESSION_ID}/exec did not answer "
        "like a LAP platform (HTTP 200, text/html; charset=utf-8)\n"
    )


# -- small pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "tty_url", "expected"),
    [
        (
            "https://lap.example.com",
            "/api/v1/managed_agents/sessions/s1/tty",
            "wss://lap.example.com/api/v1/managed_agents/sessions/s1/tty",
        ),
        (
            "http://127.0.0.1:8000",
            "/api/v1/managed_agents/sessions/s1/tty",
            "ws://127.0.0.1:8000/api/v1/managed_agents/sessions/s1/tty",
        ),
        ("http://h", "wss://other.example/tty?x=1", "wss://other.example/tty?x=1"),
        ("https://h", None, "wss://h/api/v1/managed_agents/sessions/s1/tty"),
    ],
)
def test_tty_url_is_derived_from_the_platform_url(
    url: str, tty_url: str | None, expected: str
) -> None:
    assert Client(url, "k").tty_url({"id": "s1", "tty_url": tty_url}) == expected


def test_session_id_from_accepts_ids_and_urls() -> None:
    assert session_id_from(SESSION_ID) == SESSION_ID
    assert session_id_from(f"https://lap.example.com/sessions/{SESSION_ID}/") == SESSION_ID


def test_help_of_every_command_has_examples() -> None:
    for name in [None, *cli.commands]:
        result = CliRunner().invoke(cli, [name, "--help"] if name else ["--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, name


def test_close_codes_match_the_server() -> None:
    """lapcli keeps its own copy of the terminal close codes; they must equal the server's."""
    from lapcli import tty
    from sandboxes.runner import protocol as runner
    from terminals import access as bridge

    ours = {
        name: value
        for name, value in vars(tty).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }
    theirs = {
        name: getattr(module, name)
        for module in (bridge, runner)
        for name in ours
        if hasattr(module, name)
    }
    # CLOSE_FORBIDDEN only keys the message for an HTTP 403 on the upgrade: no server sends it.
    assert set(theirs) == set(ours) - {"CLOSE_FORBIDDEN"}
    assert theirs == {name: ours[name] for name in theirs}


def test_a_harness_that_cannot_start_again_is_explained_in_the_servers_words() -> None:
    from lapcli import tty

    reason = "the harness exited and could not start again: No such file or directory"
    assert tty._close_message(ConnectionClosed(Close(4500, reason), None)) == reason
    assert (
        tty._close_message(ConnectionClosed(Close(4409, "x"), None)) == (tty.CLOSE_MESSAGES[4409])
    )


def test_every_exit_status_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("**When `lap` fails**", 1)[1].split("\n\n")[1]
    help_text = CliRunner().invoke(cli, ["--help"]).output
    for status in ExitStatus:
        if status:
            assert f"| {status.value}" in table or f", {status.value} |" in table, status
            assert str(status.value) in help_text, status
