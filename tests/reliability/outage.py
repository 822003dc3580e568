"""Making the platform's database unavailable on demand, for the outage test.

- SQLite: another connection holds an exclusive lock (``BEGIN EXCLUSIVE``), as a backup tool
  or a runaway migration would; the platform's connections time out after
  ``LAP_SQLITE_TIMEOUT`` seconds with "database is locked".
- Postgres: the platform reaches the server through ``CuttableProxy`` on loopback; ``cut()``
  resets every connection and refuses new ones until ``restore()``; ``stalled()`` lets the
  server stop answering instead, as behind a network partition.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on with a zero timeout: close() sends RST


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite database at ``path`` inside the block."""
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


class CuttableProxy:
    """A TCP relay from 127.0.0.1:``port`` to ``target`` that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]

    @classmethod
    def for_url(cls, url: str) -> tuple[CuttableProxy, str]:
        """A proxy to the server of ``url`` (postgres://…), and ``url`` routed through it."""
        parts = urlsplit(url)
        proxy = cls((parts.hostname or "127.0.0.1", parts.port or 5432))
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"127.0.0.1:{proxy.port}"
        return proxy, urlunsplit(
            parts._replace(netloc=f"{credentials}@{netloc}" if credentials else netloc)
        )

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """The server is unreachable inside the block."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """The server stops answering inside the block, as behind a network partition:
        connections stay open but no byte crosses, and new ones connect but are never served."""
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    def cut(self) -> None:
        """Reset every relayed connection and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            doomed = list(self._sockets)
            self._sockets.clear()
        # shutdown() first: close() alone does not wake a thread blocked in accept() or
        # recv() on the socket, which then stays open (and its fd number can be reused).
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = self._listen(self.port)

    def close(self) -> None:
        self.cut()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            self._flowing.wait()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._sockets.discard(source)
