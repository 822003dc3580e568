"""A session's messages (API harnesses' turns): appended with the next ``seq``, finished
once, and read back as the history a restarted session's new sandbox carries on from."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from lapsite.errors import Conflict
from sandboxes.limits import HISTORY_MAX_BYTES, json_size
from sandboxes.models import Session, SessionMessage


def session_message_append(
    session: Session,
    *,
    role: str,
    parts: list[dict],
    status: str = SessionMessage.Status.PENDING,
    info: dict | None = None,
) -> SessionMessage:
    """Append a message with the next ``seq``; concurrent appends retry on a clash."""
    for _ in range(5):
        last = SessionMessage.objects.filter(session=session).aggregate(last=Max("seq"))["last"]
        try:
            with transaction.atomic():
                return SessionMessage.objects.create(
                    session=session,
                    seq=0 if last is None else last + 1,
                    role=role,
                    status=status,
                    parts=parts,
                    info=info or {},
                    completed_at=None
                    if status == SessionMessage.Status.PENDING
                    else timezone.now(),
                )
        except IntegrityError:
            continue
    raise Conflict("could not append the message, try again")


def session_message_finish(
    message: SessionMessage,
    *,
    status: str,
    parts: list[dict] | None = None,
    info: dict | None = None,
) -> bool:
    """Complete (or fail) a pending message once; a finished message is never rewritten."""
    if status == SessionMessage.Status.PENDING:
        raise ValueError("finish needs a final status")
    changes: dict[str, object] = {"status": status, "completed_at": timezone.now()}
    if parts is not None:
        changes["parts"] = parts
    if info is not None:
        changes["info"] = info
    won = (
        SessionMessage.objects.filter(pk=message.pk, status=SessionMessage.Status.PENDING).update(
            **changes
        )
        == 1
    )
    if won:
        for field, value in changes.items():
            setattr(message, field, value)
    return won


def session_message_fail(message: SessionMessage, reason: str) -> bool:
    """Fail a pending message, saying why in its ``info.error`` (the harnesses' shape)."""
    error = {"name": "HarnessError", "data": {"message": reason}}
    return session_message_finish(
        message, status=SessionMessage.Status.FAILED, info={"error": error}
    )


def session_history(session: Session) -> list[dict]:
    """The completed messages' text, oldest first, for a new sandbox of the session (the
    runner's ``history``): the newest that fit ``HISTORY_MAX_BYTES`` of the /start body."""
    history: list[dict] = []
    size = 0
    completed = session.messages.filter(status=SessionMessage.Status.COMPLETE)
    for message in completed.order_by("-seq"):
        parts = [
            {"type": "text", "text": part["text"]}
            for part in message.parts
            if part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
        if not parts:
            continue
        entry = {"role": message.role, "parts": parts}
        size += json_size(entry)
        if size > HISTORY_MAX_BYTES:
            break
        history.append(entry)
    return history[::-1]
