"""The saved login: ``~/.lap/config.json`` (``$LAP_CONFIG_DIR/config.json`` when set).

The file holds ``{"url": …, "key": …}``, is written atomically (temporary file in the same
directory, then ``os.replace``) with mode 0600, and is never world readable, not even for an
instant; a directory lap creates for it is 0700 (one that exists keeps its mode: it may be the
user's own). ``LAP_URL`` and ``LAP_KEY`` override it for every command. A file that cannot be
read, parsed or written raises :class:`ConfigError` naming it; a failed write leaves the old
file as it was.
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

import httpx

from lapcli.status import LapError

CONFIG_NAME = "config.json"


class ConfigError(LapError):
    """The config file or its directory cannot be used; the message names the file."""


@dataclass(frozen=True)
class Config:
    url: str | None = None
    key: str | None = None


def config_dir(environ: Mapping[str, str]) -> Path:
    """Where the config lives: ``$LAP_CONFIG_DIR`` or ``~/.lap``."""
    explicit = environ.get("LAP_CONFIG_DIR")
    return Path(explicit) if explicit else Path.home() / ".lap"


def load(directory: Path) -> Config:
    """Read the saved config; a missing file is an empty config."""
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} is corrupt (not a JSON object with url and key); "
            "fix it, or replace it: lap login"
        )
    # "base" is what the reference CLI writes; accept it so an old config keeps working.
    url = data.get("url") or data.get("base")
    key = data.get("key")
    return Config(
        url=url if isinstance(url, str) else None, key=key if isinstance(key, str) else None
    )


def effective(directory: Path, environ: Mapping[str, str]) -> Config:
    """The saved config with ``LAP_URL``/``LAP_KEY`` applied on top."""
    url, key = environ.get("LAP_URL", "").strip(), environ.get("LAP_KEY", "").strip()
    if not (url and key):  # else the file is not needed, and a broken one does not matter
        saved = load(directory)
        url, key = url or saved.url or "", key or saved.key or ""
    return Config(url=normalize_url(url) if url else None, key=key or None)


def save(directory: Path, config: Config) -> Path:
    """Write the config atomically (file 0600, a new directory 0700). Returns the file path."""
    path = directory / CONFIG_NAME
    try:
        _write(directory, path, json.dumps({"url": config.url, "key": config.key}, indent=2))
    except OSError as exc:
        raise ConfigError(
            f"cannot save the login to {path}: {exc.strerror or exc} "
            "(set LAP_CONFIG_DIR to a writable directory)"
        ) from None
    return path


def _write(directory: Path, path: Path, text: str) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    except FileExistsError:
        pass  # maybe the user's own directory ($HOME…): its mode is theirs to choose
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=directory)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def delete(directory: Path) -> bool:
    """Remove the saved config. Returns whether there was one."""
    path = directory / CONFIG_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot remove {path}: {exc.strerror or exc}") from None
    return True


def normalize_url(url: str) -> str:
    """Strip whitespace and trailing slashes; add a scheme when it is missing (http only for
    loopback hosts)."""
    url = url.strip()
    if "://" not in url:
        try:
            host = urlsplit(f"//{url}").hostname or ""
        except ValueError:  # e.g. an unclosed "[::1": the HTTP client reports the bad URL
            host = ""
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        url = f"{'http' if loopback else 'https'}://{url}"
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.rstrip('/')}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a platform URL, or None when it can."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return str(exc)
    if parsed.scheme not in ("http", "https"):
        return "it must start http:// or https://"
    if not parsed.host:
        return "it has no host name"
    return None


def mask(key: str | None) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    if not key:
        return "(none)"
    if len(key) < 12:
        return "*" * 8
    return f"{key[:4]}…{key[-4:]}"
