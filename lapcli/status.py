"""Exit statuses and the one place where failures become a line of text and an exit code.

Every expected failure in `lap` is an :class:`LapError` (or a transport or URL error from httpx,
or a websockets error); :func:`describe` turns any of them into ``(ExitStatus, message)``.
``main()`` is the only caller, so the wording of every error the user can see lives in this
module.
"""

from __future__ import annotations

import difflib
import enum
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import httpx


class ExitStatus(enum.IntEnum):
    """Process exit codes of `lap` (httpie style), documented in README.md ("When `lap`
    fails") and ``lap --help``. ``exec`` and ``attach`` may also exit with the remote
    command's own code."""

    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    UNREACHABLE = 5
    SESSION_FAILED = 6
    CONNECTION_LOST = 7
    TIMEOUT = 124  # like timeout(1): `lap exec --timeout` ran out
    CANNOT_RUN = 127  # like a shell: `lap exec`'s program could not be started
    INTERRUPTED = 130


class LapError(Exception):
    """An expected failure: a message for the user and the exit status to end with."""

    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotLoggedIn(LapError):
    status = ExitStatus.AUTH

    def __init__(self) -> None:
        super().__init__("not logged in (run: lap login, or set LAP_URL and LAP_KEY)")


class ApiError(LapError):
    """A non-2xx answer from the platform. ``http_status`` is the HTTP status code, ``code``
    the machine-readable one of its body (``exec_failed``, ``session_not_ready``…), if any."""

    def __init__(self, http_status: int, message: str, code: str | None = None) -> None:
        self.http_status = http_status
        self.code = code
        if http_status == 401:
            message, status = "login expired or wrong key (run: lap login)", ExitStatus.AUTH
        elif http_status == 403:
            status = ExitStatus.AUTH
        elif http_status == 404:
            status = ExitStatus.NOT_FOUND
        elif code == "exec_failed":
            status = ExitStatus.CANNOT_RUN
        else:
            status = ExitStatus.ERROR
        super().__init__(message, status)


class NotAPlatform(LapError):
    """An answer that is not the LAP API's JSON: a web page, a proxy's login form, another
    service on that port. Usually the URL given to ``lap login`` is the wrong one."""

    def __init__(self, response: httpx.Response) -> None:
        url = response.request.url.copy_with(query=None)
        kind = response.headers.get("content-type") or "no content type"
        super().__init__(
            f"{url} did not answer like a LAP platform (HTTP {response.status_code}, {kind})"
        )


class AgentNotFound(LapError):
    status = ExitStatus.NOT_FOUND

    def __init__(self, wanted: str, names: Iterable[str]) -> None:
        close = difflib.get_close_matches(wanted, list(names), n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}" if close else " (list them with: lap agents)"
        super().__init__(f"no agent named {wanted!r}{hint}")


class SessionFailed(LapError):
    status = ExitStatus.SESSION_FAILED

    @classmethod
    def ended(cls, session: Mapping[str, Any]) -> SessionFailed:
        """The error for a ``failed`` or ``dead`` session, worded from the API's fields: its
        ``failure_reason`` when it has one (a failed bring-up, an idle timeout, a vanished
        sandbox); a session someone stopped has none and is said to be stopped."""
        name = f"session {session.get('id')}"
        reason = session.get("failure_reason")
        if session.get("status") == "failed":
            reason = reason or session.get("phase_detail")
            return cls(f"{name} failed: {reason}" if reason else f"{name} failed")
        return cls(f"{name} is dead: {reason}" if reason else f"{name} was stopped")


class ConnectionLost(LapError):
    status = ExitStatus.CONNECTION_LOST


def api_error_from_response(response: httpx.Response) -> ApiError:
    """Build the :class:`ApiError` for a failed response, using its ``{"error": …}`` body,
    with what to do where the body cannot say it: look up a session id that is unknown
    (or is an agent's), try a failing platform again later."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    code = body.get("code") if isinstance(body, dict) else None
    request, status = response.request, response.status_code
    if isinstance(error, dict):
        message = "; ".join(f"{field}: {_flatten(detail)}" for field, detail in error.items())
    elif error:
        message = _flatten(error)
        if status >= 500:
            message += f" (HTTP {status}; try again later)"
    else:
        message = f"{request.method} {request.url.path}: {status} "
        message += response.reason_phrase or "error"
        if status >= 500:
            message += " (try again later)"
    if status == 404 and "/sessions/" in request.url.path:
        message += " (list them with: lap sessions)"
    return ApiError(status, message, code if isinstance(code, str) else None)


def _flatten(detail: object) -> str:
    if isinstance(detail, list):
        return ", ".join(_flatten(item) for item in detail)
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])
    return str(detail)


def describe(exc: BaseException, url: str | None) -> tuple[ExitStatus, str]:
    """Map any expected failure to its exit status and one line of text (no traceback)."""
    where = url or "the platform"
    if isinstance(exc, LapError):
        return exc.status, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED, "interrupted"
    if isinstance(exc, httpx.InvalidURL):
        return ExitStatus.USAGE, f"{where} is not a valid URL ({exc})"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(exc):
            return (
                ExitStatus.UNREACHABLE,
                f"TLS certificate of {where} is not trusted (use --insecure to skip the check)",
            )
        return ExitStatus.UNREACHABLE, f"cannot reach {where}"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return ExitStatus.CONNECTION_LOST, f"the connection to {where} was cut ({exc}); try again"
    if isinstance(exc, httpx.TimeoutException):
        return ExitStatus.UNREACHABLE, f"{where} did not answer in time"
    if isinstance(exc, httpx.TransportError):
        return ExitStatus.UNREACHABLE, f"connection to {where} failed: {exc}"
    raise exc
