"""The ``lap`` command line: log in, list agents and sessions, open a terminal or a chat, exec."""

from __future__ import annotations

import math
from typing import Any, NoReturn

import click
import httpx

from lapcli import chat, config
from lapcli.client import Client, session_id_from
from lapcli.context import Environment
from lapcli.progress import wait_ready
from lapcli.status import (
    ApiError,
    ConnectionLost,
    ExitStatus,
    LapError,
    SessionFailed,
    describe,
)

pass_env = click.make_pass_decorator(Environment, ensure=True)


class LapGroup(click.Group):
    """A group where an unknown first word is an agent (``lap NAME`` means ``lap open NAME``)
    and where every expected failure, bad arguments included, becomes one line on stderr and
    an :class:`ExitStatus`."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options: lap --bogus
            _usage_error(exc, "lap")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's arguments
            _usage_error(exc, f"lap {ctx.invoked_subcommand or ''}".strip())
        except (LapError, KeyboardInterrupt, httpx.TransportError, httpx.InvalidURL) as exc:
            env = ctx.find_object(Environment)
            status, message = describe(exc, env.url if env else None)
            click.echo(f"lap: {message}", err=True)
            ctx.exit(status)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            return "open", self.get_command(ctx, "open"), args
        return super().resolve_command(ctx, args)


def _usage_error(exc: click.UsageError, command: str) -> NoReturn:
    """One line instead of click's usage block: what was wrong and where the usage is.
    ``command`` is the one being parsed (click's error may not know it)."""
    message = exc.format_message().rstrip(".")
    click.echo(f"lap: {message[:1].lower()}{message[1:]} (usage: {command} --help)", err=True)
    raise click.exceptions.Exit(ExitStatus.USAGE)


class SessionRef(click.ParamType[str]):
    """A session id, or a URL containing ``/sessions/<uuid>``; converted to the id."""

    name = "session"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        session_id = session_id_from(value)
        if not session_id.strip():
            self.fail("give a session id (list them with: lap sessions)", param, ctx)
        return session_id


SESSION = SessionRef()


MAIN_EPILOG = """\b
Examples:
  lap login                       save the platform URL and your key
  lap agents                      list agents
  lap my-shell                    open a session of agent "my-shell" and attach
  lap attach 3f2a…                re-attach to a running session (or: lap --resume 3f2a…)
  lap exec my-shell -- make test  run one command in a new sandbox, exit with its code
  lap sessions --agent my-shell   list that agent's sessions
  lap stop 3f2a…                  stop a session

\b
Inside a terminal, a lone Ctrl-D detaches; the session keeps running.
LAP_URL and LAP_KEY override the saved login; LAP_CONFIG_DIR moves ~/.lap.

\b
Errors are one line on stderr. Exit statuses: 1 error, 2 usage, 3 login or
permission, 4 no such agent or session, 5 unreachable, 6 session failed,
7 connection lost, 130 Ctrl-C; exec and attach: the command's own
(exec: 124 timed out, 127 could not start).
"""


@click.group(cls=LapGroup, invoke_without_command=True, epilog=MAIN_EPILOG)
@click.option(
    "--resume",
    type=SESSION,
    metavar="SESSION",
    help="Re-attach to a running session (= lap attach).",
)
@click.option("--insecure", is_flag=True, help="Do not verify the platform's TLS certificate.")
@click.version_option(package_name="lap", prog_name="lap")
@click.pass_context
def cli(ctx: click.Context, resume: str | None, insecure: bool) -> None:
    """Run and attach to coding agents on a LAP platform, like ssh for sandboxes."""
    env = ctx.ensure_object(Environment)
    env.insecure = env.insecure or insecure
    ctx.call_on_close(env.close)
    if ctx.invoked_subcommand is None:
        if resume:
            ctx.invoke(attach_cmd, session_id=resume)
        else:
            click.echo(ctx.get_help())


# -- login / logout / config -------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  lap login
  lap login --url https://lap.example.com --key "$LAP_KEY"
"""
)
@click.option("--url", help="Platform URL, e.g. https://lap.example.com")
@click.option("--key", help="Master key or personal API token (prompted, hidden, if omitted).")
@pass_env
def login(env: Environment, url: str | None, key: str | None) -> None:
    """Save the platform URL and key to ~/.lap/config.json (mode 0600).

    The key is checked against the platform before it is saved."""
    if not url:
        try:
            saved = config.load(env.config_dir).url
        except config.ConfigError:
            saved = None  # a broken file is about to be replaced
        url = _ask(env, "platform URL", default=saved or None)
    if not key:
        key = _ask(env, "key", hide_input=True)
    url = config.normalize_url(url)
    key = key.strip()
    client = env.make_client(url, key)
    try:
        count = len(client.list_agents())
    except ApiError as error:
        if error.http_status != 401:
            raise
        raise LapError(f"{url} refused this key: nothing was saved", ExitStatus.AUTH) from None
    finally:
        client.close()
    path = config.save(env.config_dir, config.Config(url=url, key=key))
    agents_seen = f"{count} agent{'' if count == 1 else 's'}"
    click.echo(f"logged in to {url} ({agents_seen}); saved to {path}")


def _ask(env: Environment, what: str, **options: Any) -> str:
    """Prompt for ``what``. click turns Ctrl-C, Ctrl-D and the end of piped input into Abort:
    at a terminal the user cancelled, otherwise the input ran out."""
    try:
        answer: str = click.prompt(what[:1].upper() + what[1:], **options)
    except click.Abort:
        if env.is_stdin_tty:
            if not options.get("hide_input"):  # (click ends a hidden prompt's line itself)
                click.echo(err=True)
            raise LapError("login cancelled; nothing was saved", ExitStatus.INTERRUPTED) from None
        raise LapError(
            f"no {what} given on stdin (use: lap login --url URL --key KEY)", ExitStatus.USAGE
        ) from None
    return answer


@cli.command(epilog="Example:\n  lap logout")
@pass_env
def logout(env: Environment) -> None:
    """Forget the saved URL and key."""
    if config.delete(env.config_dir):
        click.echo("logged out")
    else:
        click.echo("not logged in")


@cli.command("config", epilog="Example:\n  lap config")
@pass_env
def config_cmd(env: Environment) -> None:
    """Show the platform URL and the (masked) key in use, and where they come from."""
    current = env.config
    path = env.config_dir / config.CONFIG_NAME
    url_source = "LAP_URL" if env.environ.get("LAP_URL") else str(path)
    key_source = "LAP_KEY" if env.environ.get("LAP_KEY") else str(path)
    click.echo(f"url:  {current.url or '(none)'}" + (f"  [{url_source}]" if current.url else ""))
    click.echo(f"key:  {config.mask(current.key)}" + (f"  [{key_source}]" if current.key else ""))
    click.echo(f"file: {path}" + ("" if path.exists() else " (absent)"))


# -- agents / sessions / stop ---------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


@cli.command(epilog="Example:\n  lap agents")
@pass_env
def agents(env: Environment) -> None:
    """List every agent: name, harness, whether it has a terminal, id."""
    rows = [
        [
            str(agent.get("name")),
            str(agent.get("harness_id") or ""),
            "tui" if agent.get("supports_tui") else "chat",
            str(agent.get("id")),
        ]
        for agent in sorted(env.client().list_agents(), key=lambda a: str(a.get("name")))
    ]
    if not rows:
        click.echo("no agents yet (create one in the web UI or with POST /agents)")
        return
    click.echo(_table(rows, ["NAME", "HARNESS", "MODE", "ID"]))


@cli.command(
    epilog="""\b
Examples:
  lap sessions
  lap sessions --agent my-shell
"""
)
@click.option("--agent", "agent_name", metavar="NAME", help="Only this agent's sessions.")
@pass_env
def sessions(env: Environment, agent_name: str | None) -> None:
    """List sessions: id, agent, status, phase, created."""
    client = env.client()
    all_agents = client.list_agents()
    names = {str(agent.get("id")): str(agent.get("name")) for agent in all_agents}
    agent_id = str(client.resolve_agent(agent_name)["id"]) if agent_name else None
    found = client.list_sessions(agent_id)
    if agent_id:  # servers that ignore the filter still show only what was asked for
        found = [s for s in found if str(s.get("agent_id")) == agent_id]
    if not found:
        click.echo("no sessions")
        return
    rows = [
        [
            str(s.get("id")),
            names.get(str(s.get("agent_id")), str(s.get("agent_id"))[:8]),
            str(s.get("status") or ""),
            _phase_shown(s),
            str(s.get("created_at") or ""),
        ]
        for s in found
    ]
    click.echo(_table(rows, ["ID", "AGENT", "STATUS", "PHASE", "CREATED"]))


def _phase_shown(session: dict[str, Any]) -> str:
    """The bring-up phase while it is news: where a creating session is, or where a failed
    one stopped. A ready or dead session's phase is the last one it reached ("ready"), which
    beside "dead" would read as if it still were."""
    if session.get("status") in ("creating", "failed"):
        return str(session.get("phase") or "")
    return ""


@cli.command(epilog="Example:\n  lap stop 3f2a9c1e-…")
@click.argument("session_id", metavar="SESSION", type=SESSION)
@pass_env
def stop(env: Environment, session_id: str) -> None:
    """Stop a session and its sandbox (safe to repeat)."""
    result = env.client().delete_session(session_id)
    click.echo(f"session {session_id}: {result.get('status') or 'stopped'}")


# -- open / attach --------------------------------------------------------------------------------


def _supports_tui(session: dict[str, Any], agent: dict[str, Any] | None = None) -> bool:
    for source in (session, agent or {}):
        if source.get("supports_tui") is not None:
            return bool(source["supports_tui"])
    return True


def _require_stdin_terminal(
    env: Environment, session: dict[str, Any], agent: dict[str, Any] | None = None
) -> None:
    """A terminal session needs a terminal on stdin: raw mode and key-by-key input have nothing
    to work on otherwise. Checked before a session is started, so none is left behind."""
    if _supports_tui(session, agent) and not env.is_stdin_tty:
        raise LapError(
            "this session is a terminal and stdin is not one "
            "(run it from a terminal, or use: lap exec AGENT -- CMD)",
            ExitStatus.USAGE,
        )


def _enter(
    env: Environment, client: Client, session: dict[str, Any], agent: dict[str, Any] | None
) -> None:
    """Attach a terminal or open the chat, then exit with the right status."""
    session_id = str(session["id"])
    if not _supports_tui(session, agent):
        chat.repl(env, client, session_id)
        return
    # Imported here: termios-based terminal code is only needed when attaching.
    from lapcli import tty

    outcome = tty.attach(client, session_id)
    if outcome.kind == "detached":
        click.echo(f"\ndetached — re-attach with: lap attach {session_id}", err=True)
    elif outcome.kind == "exited":
        click.echo(
            f"\nsession {session_id}: process exited with code {outcome.code}"
            f" — attach again to start it anew: lap attach {session_id}",
            err=True,
        )
    elif outcome.kind == "closed":
        click.echo(f"\nthe platform closed the terminal of session {session_id}", err=True)
    click.get_current_context().exit(outcome.code)


@cli.command(
    "open",
    epilog="""\b
Examples:
  lap open my-shell
  lap my-shell                   the same, shorter (when no command has that name)
  lap open 0b6c7f0e-…            by id
""",
)
@click.argument("agent")
@pass_env
def open_cmd(env: Environment, agent: str) -> None:
    """Start a new session of AGENT (name or id) and attach to it.

    Shows the bring-up phases while the sandbox starts. Terminal agents get an ssh-like
    terminal (a lone Ctrl-D detaches); API agents get a chat prompt."""
    client = env.client()
    found = client.resolve_agent(agent)
    _require_stdin_terminal(env, {}, found)
    session = client.create_session(str(found["id"]))
    print(f"session {session['id']} for agent {found.get('name')}", file=env.stderr, flush=True)
    try:
        session = wait_ready(env, client, session)
    except KeyboardInterrupt:
        stopped = _stop_started(env, client, str(session["id"]))
        outcome = "the new session was stopped" if stopped else "see above"
        raise LapError(f"cancelled; {outcome}", ExitStatus.INTERRUPTED) from None
    _enter(env, client, session, found)


@cli.command(
    "attach",
    epilog="""\b
Examples:
  lap attach 3f2a9c1e-…
  lap attach https://lap.example.com/sessions/3f2a9c1e-…
  lap --resume 3f2a9c1e-…
""",
)
@click.argument("session_id", metavar="SESSION", type=SESSION)
@pass_env
def attach_cmd(env: Environment, session_id: str) -> None:
    """Re-attach to a running session (the current screen is replayed)."""
    client = env.client()
    current = client.get_session(session_id)
    if current.get("status") in ("dead", "failed"):
        raise SessionFailed.ended(current)
    _require_stdin_terminal(env, current)
    if current.get("status") == "creating":
        current = wait_ready(env, client, current)
    _enter(env, client, current, None)


# -- exec -----------------------------------------------------------------------------------------


def _positive_seconds(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    """``--timeout``: a finite number of seconds above 0, checked before a session starts."""
    if value is not None and not 0 < value < math.inf:
        raise click.BadParameter(f"{value} is not a number of seconds above 0")
    return value


@cli.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    epilog="""\b
Examples:
  lap exec my-shell -- uname -a  new session, stopped afterwards
  lap exec --keep my-shell -- make test  keep the session for later
  lap exec --session 3f2a9c1e-… -- ls    in an existing session
  lap exec my-shell -- sh -c 'exit 3'; echo $?   prints 3
""",
)
@click.option(
    "--session", "session_id", type=SESSION, metavar="ID", help="Run in this existing session."
)
@click.option("--keep", is_flag=True, help="Do not stop the new session afterwards.")
@click.option(
    "--timeout",
    type=float,
    callback=_positive_seconds,
    metavar="SECONDS",
    help="Kill the command after this long (else at the platform's limit).",
)
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="[AGENT] -- CMD...")
@pass_env
def exec_cmd(
    env: Environment,
    session_id: str | None,
    keep: bool,
    timeout: float | None,
    words: tuple[str, ...],
) -> None:
    """Run one command non-interactively and exit with its exit code.

    Its stdout and stderr go to the local stdout and stderr. Without --session a new session of
    AGENT is started and stopped afterwards (like docker run --rm) unless --keep is given."""
    agent_ref, argv = _exec_words(words, needs_agent=session_id is None)
    client = env.client()
    created = False
    if agent_ref is not None:
        found = client.resolve_agent(agent_ref)
        session = client.create_session(str(found["id"]), title="lap exec")
        session_id, created = str(session["id"]), True
    assert session_id is not None
    try:
        if created:
            wait_ready(env, client, session)
        code = _stream_exec(env, client, session_id, argv, timeout)
    finally:
        if created and not keep:
            _stop_started(env, client, session_id)
    click.get_current_context().exit(code)


def _stop_started(env: Environment, client: Client, session_id: str) -> bool:
    """Stop a session lap itself started. If that fails, say so on stderr instead of raising:
    the reason lap is ending (the command's exit code, a timeout, Ctrl-C) must not be lost."""
    try:
        client.delete_session(session_id)
    except (LapError, httpx.HTTPError) as error:
        print(
            f"lap: could not stop session {session_id} ({error}); "
            f"it may still be running: lap stop {session_id}",
            file=env.stderr,
            flush=True,
        )
        return False
    return True


def _exec_words(words: tuple[str, ...], *, needs_agent: bool) -> tuple[str | None, list[str]]:
    """Split ``[AGENT] [--] CMD...`` into the agent (None when not needed) and the command.

    Checked before any API call, so a usage error never leaves a new session behind."""
    args = list(words)
    if args and args[0] == "--":
        args = args[1:]
    agent_ref = None
    if needs_agent:
        if not args:
            raise click.UsageError("give an AGENT (or --session ID) and a command")
        agent_ref, args = args[0], args[1:]
        if args and args[0] == "--":
            args = args[1:]
    if not args:
        raise click.UsageError("no command given: put it after --")
    return agent_ref, args


def _stream_exec(
    env: Environment, client: Client, session_id: str, argv: list[str], timeout: float | None
) -> int:
    for frame in client.exec(session_id, argv, timeout):
        if frame.get("error") == "timeout":
            limit = f"after {timeout:g}s" if timeout else "at the platform's limit"
            hint = "" if timeout else " (give a longer one with --timeout)"
            raise LapError(f"command timed out {limit}{hint}", ExitStatus.TIMEOUT)
        if frame.get("error"):
            raise LapError(f"exec failed: {frame['error']}")
        if "exit_code" in frame:
            return _shell_exit_code(frame["exit_code"])
        stream = env.stderr if frame.get("stream") == "stderr" else env.stdout
        stream.write(str(frame.get("data", "")))
        stream.flush()
    raise ConnectionLost("exec ended without an exit code (the connection was cut)")


def _shell_exit_code(code: object) -> int:
    """The remote exit code as a shell gives it (128 + N for a process killed by signal N:
    the platform sends it so, other servers may send -N); anything else is an error rather
    than an exit status that wraps around (256 would be 0, success)."""
    if isinstance(code, int) and not isinstance(code, bool) and -128 < code < 256:
        return 128 - code if code < 0 else code
    raise LapError(f"exec ended with no usable exit code ({code!r})")


# -- entry point ----------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point (``lap``)."""
    cli.main(prog_name="lap")
