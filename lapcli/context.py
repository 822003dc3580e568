"""The one object every command receives (httpie's ``Environment``): streams, TTY flags,
environment variables, the config directory and the HTTP transport. Tests build their own
instance (a ``MockTransport``, a temp config dir) and pass it as click's ``obj``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx

from lapcli import config
from lapcli.client import Client
from lapcli.status import ExitStatus, LapError, NotLoggedIn


@dataclass
class Environment:
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    transport: httpx.BaseTransport | None = None
    insecure: bool = False
    stdin_isatty: bool | None = None
    stderr_isatty: bool | None = None
    poll_interval: float = 0.25
    sleep: Callable[[float], None] = time.sleep
    _client: Client | None = field(default=None, init=False, repr=False)
    _client_url: str | None = field(default=None, init=False, repr=False)

    # Streams are looked up at use time so click's CliRunner (which swaps sys.std*) sees them.
    @property
    def stdout(self) -> TextIO:
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    @property
    def is_stdin_tty(self) -> bool:
        return self.stdin_isatty if self.stdin_isatty is not None else sys.stdin.isatty()

    @property
    def is_stderr_tty(self) -> bool:
        return self.stderr_isatty if self.stderr_isatty is not None else sys.stderr.isatty()

    @property
    def config_dir(self) -> Path:
        return config.config_dir(self.environ)

    @property
    def config(self) -> config.Config:
        return config.effective(self.config_dir, self.environ)

    @property
    def url(self) -> str | None:
        """The platform URL in use, for error messages: the one a client was last made for
        (``lap login --url`` talks to a URL not saved yet), else the configured one."""
        if self._client_url:
            return self._client_url
        try:
            return self.config.url
        except LapError:  # a broken config file: its own error says so
            return None

    def client(self) -> Client:
        """The API client for the configured platform; raises :class:`NotLoggedIn`."""
        if self._client is None:
            current = self.config
            if not current.url or not current.key:
                raise NotLoggedIn()
            self._client = self.make_client(current.url, current.key)
        return self._client

    def make_client(self, url: str, key: str) -> Client:
        """A client for ``url``; a URL that cannot be a platform's is a usage error."""
        self._client_url = url
        if problem := config.url_problem(url):
            raise LapError(f"{url} is not a valid URL ({problem})", ExitStatus.USAGE)
        return Client(url, key, transport=self.transport, verify=not self.insecure)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
