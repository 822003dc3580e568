"""The PTY recording, an asciicast v2 file (https://docs.asciinema.org/manual/asciicast/v2/).

One JSON header line, then one JSON array per event: ``[seconds, "o", text]`` for output and
``[seconds, "r", "COLSxROWS"]`` for a resize. Output bytes are decoded as UTF-8 with
replacement, incrementally, so a character split across two reads stays whole.

When the harness exits and a client attaching starts it again, the file goes on: a marker
event ``[t, "m", "harness started again"]`` separates the two runs.

The file is size-capped: once it would grow past ``max_bytes`` a marker event
``[t, "m", "recording truncated ..."]`` is written and nothing more is appended, so a chatty
harness cannot fill the sandbox's disk.
"""

from __future__ import annotations

import codecs
import json
import time
from pathlib import Path
from typing import BinaryIO

from .protocol import TERM

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
RESTART_MARKER = "harness started again"


class Recorder:
    """Appends a PTY's events to an asciicast v2 file. Writes are buffered; ``flush()`` them."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.truncated = False
        self._size = 0
        self._start = 0.0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._file: BinaryIO | None = None

    def start(self, cols: int, rows: int, env: dict[str, str]) -> None:
        """Create the file (replacing an old one) and write the header; when the file is open
        already (the harness was started again), mark the restart instead."""
        if self._file is not None:
            if not self.truncated:
                self._event("m", RESTART_MARKER)
            return
        self._file = self.path.open("wb")
        self._start = time.monotonic()
        header: dict[str, object] = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
            "env": {"TERM": TERM, "SHELL": env.get("SHELL", "")},
        }
        self._write((json.dumps(header) + "\n").encode())

    def output(self, data: bytes) -> None:
        if self._file is not None and not self.truncated:
            text = self._decoder.decode(data)
            if text:
                self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        if self._file is not None and not self.truncated:
            self._event("r", f"{cols}x{rows}")

    def _event(self, kind: str, data: str) -> None:
        elapsed = round(time.monotonic() - self._start, 6)
        line = (json.dumps([elapsed, kind, data], ensure_ascii=False) + "\n").encode()
        if self._size + len(line) > self.max_bytes:
            self.truncated = True
            note = f"recording truncated: it reached the {self.max_bytes}-byte cap"
            self._write((json.dumps([elapsed, "m", note]) + "\n").encode())
            return
        self._write(line)

    def _write(self, line: bytes) -> None:
        assert self._file is not None
        self._file.write(line)
        self._size += len(line)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self) -> bytes | None:
        """The recording so far, or None before the harness started."""
        if not self.path.exists():
            return None
        self.flush()
        return self.path.read_bytes()
