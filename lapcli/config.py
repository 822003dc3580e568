"""The saved login: ``~/.lap/config.json`` (``$LAP_CONFIG_DIR/config.json`` when set).

The file holds ``{"url": …, "key": …}``, is written atomically (temporary file in the same
directory, then ``os.replace``) with mode 0600 inside a 0700 directory, and is never world
readable, not even for an instant. ``LAP_URL`` and ``LAP_KEY`` override it for every command.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Config:
    url: str | None = None
    key: str | None = None


def config_dir(environ: Mapping[str, str]) -> Path:
    """Where the config lives: ``$LAP_CONFIG_DIR`` or ``~/.lap``."""
    explicit = environ.get("LAP_CONFIG_DIR")
    return Path(explicit) if explicit else Path.home() / ".lap"


def load(directory: Path) -> Config:
    """Read the saved config; a missing or unreadable file is an empty config."""
    try:
        data = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return Config()
    if not isinstance(data, dict):
        return Config()
    # "base" is what the reference CLI writes; accept it so an old config keeps working.
    url = data.get("url") or data.get("base")
    key = data.get("key")
    return Config(
        url=url if isinstance(url, str) else None, key=key if isinstance(key, str) else None
    )


def effective(directory: Path, environ: Mapping[str, str]) -> Config:
    """The saved config with ``LAP_URL``/``LAP_KEY`` applied on top."""
    saved = load(directory)
    url = environ.get("LAP_URL") or saved.url
    return Config(url=normalize_url(url) if url else None, key=environ.get("LAP_KEY") or saved.key)


def save(directory: Path, config: Config) -> Path:
    """Write the config atomically: directory 0700, file 0600. Returns the file path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / CONFIG_NAME
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=directory)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": config.url, "key": config.key}, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def delete(directory: Path) -> bool:
    """Remove the saved config. Returns whether there was one."""
    try:
        (directory / CONFIG_NAME).unlink()
    except FileNotFoundError:
        return False
    return True


def normalize_url(url: str) -> str:
    """Strip whitespace and trailing slashes; add a scheme when it is missing (http only for
    loopback hosts)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        try:
            host = urlsplit(f"//{url}").hostname or ""
        except ValueError:  # e.g. an unclosed "[::1": the HTTP client reports the bad URL
            host = ""
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        url = f"{'http' if loopback else 'https'}://{url}"
    return url


def mask(key: str | None) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    if not key:
        return "(none)"
    if len(key) < 12:
        return "*" * 8
    return f"{key[:4]}…{key[-4:]}"
