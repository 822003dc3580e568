"""django-q2 entry points: thin, idempotent wrappers over the sandboxes app's services."""

from __future__ import annotations

import logging

from sandboxes import conversation, services
from sandboxes.models import Session
from sandboxes.reconcile import reconcile

logger = logging.getLogger(__name__)


def session_bring_up(session_id: str) -> None:
    try:
        services.session_bring_up(session_id)
    except Exception as error:
        # Anything the service did not turn into a failure (a runner or programming
        # error) still must not leave the session stuck in creating.
        logger.exception("bring-up of session %s failed", session_id)
        session = Session.objects.filter(pk=session_id).first()
        if session is not None:
            services.session_fail(session, f"bring-up failed: {error}")
        raise


def session_stop(session_id: str, reason: str = "") -> bool:
    """Stop a session (e.g. at a vault tripwire); idempotent."""
    session = Session.objects.filter(pk=session_id).first()
    return session is not None and services.session_stop(session, reason=reason)


def session_first_turn(session_id: str) -> None:
    """Run a ready API session's ``initial_prompt`` as its first turn (idempotent)."""
    conversation.first_turn(session_id)


def sandbox_reconcile() -> dict[str, int]:
    counts = reconcile()
    if counts:
        logger.info("reconcile: %s", counts)
    return counts
