"""Who may open a session's terminal, decided before any PTY byte is sent.

Two ways in (DESIGN.md → Terminal protocol):

- a ``tty_token`` (``Authorization: Bearer`` or ``?token=``): signed, expiring and
  bound to one session; no Origin header needed (CLI, scripts, LAP clients);
- a logged-in browser session (cookie): only from an allowed Origin, so another
  site cannot open a terminal with the user's cookie (cross-site WebSocket hijacking).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib import auth
from django.http.request import validate_host

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_NOT_READY = 4409
CLOSE_TOO_BIG = 4413
CLOSE_RUNNER_UNAVAILABLE = 4503


class TerminalDenied(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    token: str | None
    origin: str | None


def credentials_from_scope(scope: dict) -> Credentials:
    headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
    token = None
    authorization = headers.get("authorization", b"").decode("latin-1").split()
    if len(authorization) == 2 and authorization[0].lower() == "bearer":
        token = authorization[1]
    else:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [None])[0]
    origin = headers.get("origin")
    return Credentials(token=token, origin=origin.decode("latin-1") if origin else None)


def session_user(session):
    """The user signed in to a browser session (anonymous if none); reads the database.

    Django's ``auth.get_user`` needs only ``request.session``.
    """
    return auth.get_user(SimpleNamespace(session=session))


def origin_allowed(origin: str | None) -> bool:
    """A configured trusted origin, or one whose host is in ``ALLOWED_HOSTS``.

    The platform's own pages always qualify: Django serves them only on allowed hosts.
    """
    if not origin:
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    hostname = urlsplit(origin).hostname
    return bool(hostname) and validate_host(hostname, settings.ALLOWED_HOSTS)
