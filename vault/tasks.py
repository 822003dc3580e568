"""django-q2 entry points: thin, idempotent wrappers over ``vault.services``."""

from __future__ import annotations

import logging

from lapsite.errors import LapError
from sandboxes.models import Sandbox
from vault import services

logger = logging.getLogger(__name__)


def vault_push_sandbox(sandbox_id: str) -> int | None:
    """Push the current bundle to a running sandbox's sidecar (rotation); its version."""
    sandbox = Sandbox.objects.filter(pk=sandbox_id, state=Sandbox.State.RUNNING).first()
    if sandbox is None:
        return None
    try:
        return services.vault_push(sandbox)
    except LapError as error:
        logger.warning("pushing secrets to sandbox %s failed: %s", sandbox_id, error.message)
        return None
