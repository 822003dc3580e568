"""The local state directory (``LAP_HOME``) and the keys generated into it.

The embedded default needs no configuration: keys that are not given in the
environment are generated once, written to ``LAP_HOME/keys.json`` (mode 0600)
and reused on every later start, so sessions, tokens and encrypted secrets
survive restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

KEYS_FILE = "keys.json"


def ensure_home(home: Path) -> Path:
    """Create ``home`` (mode 0711: sandboxes may traverse it, never list it)."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o711)
    return home


def private_database(path: Path) -> None:
    """Make a SQLite database and its ``-wal``/``-shm`` files readable by this user only.

    The database holds password hashes and login sessions. SQLite creates it under the process
    umask (0644 with the usual 022) and gives the other two files the database's mode, and
    ``LAP_HOME`` must stay traversable for the sandboxes: so the file itself is made 0600,
    before SQLite first opens it and again on every start (an older install's is fixed too).
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(name).chmod(0o600)


def _generate() -> dict[str, str]:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "LAP_MASTER_KEY": "lap-" + secrets.token_urlsafe(32),
        "LAP_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def generated_keys(home: Path) -> dict[str, str]:
    """Return the keys kept in ``home``, generating any that are missing."""
    path = home / KEYS_FILE
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    fresh = {name: value for name, value in _generate().items() if name not in stored}
    if fresh:
        stored.update(fresh)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle, indent=2)
    return stored
