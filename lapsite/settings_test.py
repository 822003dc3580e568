"""Test-only overrides: speed and determinism, nothing else."""

from __future__ import annotations

import os
import tempfile

# Every test run gets its own state directory (database file, keys, sandboxes);
# tests/conftest.py removes it at the end of the run.
os.environ.setdefault("LAP_HOME", tempfile.mkdtemp(prefix="lap-test-"))

from lapsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, as in the embedded default: threads with their own connections then wait for
    # the write lock (the shared-cache in-memory database fails them with "table is locked").
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["LAP_HOME"], "test.sqlite3")}  # noqa: F405
