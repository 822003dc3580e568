"""Bytes in and out of a ready session: one-off commands and the terminal recording."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lapsite.errors import LapError, NotFound, TooLarge, Unavailable
from sandboxes import services
from sandboxes.limits import EXEC_ARGV_MAX_BYTES, require_at_most, runner_refusal
from sandboxes.models import Session
from sandboxes.recordings import recording_stored
from sandboxes.registry import runner_client
from sandboxes.runner_client import RunnerError


def session_exec(session: Session, *, argv: list[str], timeout: float) -> Iterator[dict[str, Any]]:
    """Run ``argv`` in the session's sandbox with the harness env; yield its events.

    The first event is fetched before returning, so an unreachable runner is an
    ``Unavailable`` (503) and a program that cannot start a ``LapError`` (400) rather
    than a broken stream. Raises ``TooLarge`` (413) for an argv over ``EXEC_ARGV_MAX_BYTES``
    (or one the runner refuses as too large) and ``Conflict`` (409) unless the session is
    ready. A command that outlives ``timeout`` is killed and ends with
    ``{"exit_code": None, "error": "timeout"}``. Closing the iterator ends the command.
    """
    require_at_most("argv", argv, EXEC_ARGV_MAX_BYTES, "bytes (UTF-8) in all")
    runner_url, token = services.session_runner(session)
    client = runner_client(runner_url, token)
    events = client.exec(argv, timeout=timeout)
    try:
        first = next(events)
    except StopIteration:
        client.close()
        raise Unavailable("the sandbox ended the command without a result") from None
    except RunnerError as error:
        client.close()
        if error.status == 400:  # the runner could not start the program, and says why
            reason = error.detail or f"cannot run {argv[0]!r}"
            raise LapError(f"{reason} (in the sandbox)", code="exec_failed") from None
        if error.status == 413:
            raise TooLarge(runner_refusal("command")) from None
        raise Unavailable("the sandbox is unreachable") from error
    services.session_touch(session.id)
    return _stream(first, events, client)


def _stream(first: dict[str, Any], events: Iterator[dict[str, Any]], client) -> Iterator[dict]:
    try:
        yield first
        try:
            yield from events
        except RunnerError:
            yield {"exit_code": None, "error": "sandbox connection lost"}
    finally:
        events.close()
        client.close()


def session_recording(session: Session) -> bytes:
    """The session's asciicast recording: live from the runner, or the copy kept at stop."""
    if session.status == Session.Status.READY:
        runner_url, token = services.session_runner(session)
        client = runner_client(runner_url, token)
        try:
            data = client.recording()
        except RunnerError as error:
            raise Unavailable("the sandbox is unreachable") from error
        finally:
            client.close()
    else:
        data = recording_stored(session.id)
    if not data:
        raise NotFound("this session has no terminal recording", code="no_recording")
    return data
