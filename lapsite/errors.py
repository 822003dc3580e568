"""Domain errors raised by services; the API layer renders them as ``{"error", "code"}``."""

from __future__ import annotations


class LapError(Exception):
    """Base class: an expected failure with an HTTP status and a stable slug."""

    status = 400
    code = "bad_request"
    default_message = "bad request"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        super().__init__(self.message)


class NotFound(LapError):
    status = 404
    code = "not_found"
    default_message = "not found"


class Conflict(LapError):
    """The object is in a state that does not allow the operation (e.g. session not ready)."""

    status = 409
    code = "conflict"
    default_message = "conflict"


class TooLarge(LapError):
    """The request is larger than the platform takes (or can forward to a sandbox)."""

    status = 413
    code = "too_large"
    default_message = "request too large"


class Unavailable(LapError):
    """A backend (driver, sandbox, database) cannot serve the request right now."""

    status = 503
    code = "unavailable"
    default_message = "backend unavailable"
