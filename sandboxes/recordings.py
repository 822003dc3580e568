"""Terminal recordings (asciicast v2): served live by the runner, kept by the platform.

The runner records the PTY inside the sandbox and caps the file's size. When a
sandbox is destroyed the platform copies the recording to
``LAP_HOME/recordings/<session id>.cast`` first, so it stays downloadable after
the sandbox is gone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings

from sandboxes.models import Sandbox
from sandboxes.registry import runner_client
from sandboxes.runner_client import RunnerError
from vault import crypto

logger = logging.getLogger(__name__)


def recording_path(session_id: object) -> Path:
    return Path(settings.LAP_HOME) / "recordings" / f"{session_id}.cast"


def recording_keep(sandbox: Sandbox) -> None:
    """Copy a live sandbox's recording to the state directory; best effort."""
    if sandbox.session_id is None or not sandbox.runner_url:
        return
    try:
        data = runner_client(sandbox.runner_url, crypto.decrypt(sandbox.runner_token)).recording()
    except RunnerError as error:
        logger.info("sandbox %s: no recording kept: %s", sandbox.id, error)
        return
    if not data:
        return
    path = recording_path(sandbox.session_id)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    partial = path.with_suffix(".part")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    partial.replace(path)


def recording_stored(session_id: object) -> bytes | None:
    path = recording_path(session_id)
    return path.read_bytes() if path.exists() else None
