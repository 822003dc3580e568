"""Terminal operations: deciding whether a WebSocket may attach, and recording activity."""

from __future__ import annotations

from dataclasses import dataclass

from lapsite.errors import Conflict, NotFound
from sandboxes import services as sessions
from terminals.access import (
    CLOSE_NOT_FOUND,
    CLOSE_NOT_READY,
    CLOSE_UNAUTHORIZED,
    Credentials,
    TerminalDenied,
    origin_allowed,
)


@dataclass(frozen=True)
class TerminalTarget:
    runner_url: str
    runner_token: str


def _authorized(session_id: str, credentials: Credentials, user) -> bool:
    if credentials.token is not None:
        return sessions.tty_token_check(credentials.token, session_id)
    # Cookie sessions: a signed-in user (who must also be allowed to see the session), but
    # only from an allowed Origin so another site cannot ride on the user's cookie.
    signed_in = user is not None and user.is_authenticated and user.is_active
    return signed_in and origin_allowed(credentials.origin)


def terminal_target(session_id: str, credentials: Credentials, user) -> TerminalTarget:
    """The runner to bridge to; raises ``TerminalDenied`` with the close code to send.

    Authentication is checked before the session is looked up, so an
    unauthenticated client learns nothing about which sessions exist.
    """
    if not _authorized(session_id, credentials, user):
        raise TerminalDenied(CLOSE_UNAUTHORIZED, "invalid or expired terminal token")
    try:
        # The session's own token is access to it; a cookie gives the user's sessions only.
        viewer = None if credentials.token is not None else user
        session = sessions.session_get(session_id, viewer=viewer)
        if not session.supports_tui:
            raise TerminalDenied(CLOSE_NOT_READY, f"harness '{session.harness_id}' has no terminal")
        runner_url, runner_token = sessions.session_runner(session)
    except NotFound as error:
        raise TerminalDenied(CLOSE_NOT_FOUND, "session not found") from error
    except Conflict as error:
        raise TerminalDenied(CLOSE_NOT_READY, f"session is {session.status}") from error
    return TerminalTarget(runner_url=runner_url, runner_token=runner_token)
