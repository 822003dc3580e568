"""How much of a client's request the platform forwards to the in-sandbox runner.

The runner refuses a request body over ``MAX_BODY_BYTES`` (1 MiB, ``sandboxes/runner/
protocol.py``) with a 413. The API's own cap on a body (Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``,
2.5 MB) is larger, so what a session's exec, message or initial prompt forwards is held to
the smaller limits here, derived from the runner's: a request within them is never refused
inside the sandbox, and one beyond them is a 413 (``TooLarge``) that names the limit. Sizes
are counted in UTF-8 bytes, as the runner receives them (inside a JSON body).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from lapsite.errors import TooLarge
from sandboxes.runner.protocol import MAX_BODY_BYTES

# An /exec body carries the argv as JSON, which writes a byte as at most six ("\u001f"); with
# the quotes and commas of up to 256 arguments, an eighth of the runner's cap always fits.
# It is also Linux's limit for one argument (MAX_ARG_STRLEN, 128 KiB), and a small part of
# what execve takes for argv and environment together (ARG_MAX, about 2 MB).
EXEC_ARGV_MAX_BYTES = MAX_BODY_BYTES // 8
# A /turn body carries the message's text parts as JSON. A quarter of the cap leaves room for
# the text to double as JSON writes it (quotes, backslashes and newlines take two bytes); only
# text made mostly of other control characters (six bytes each) can still reach the runner's
# cap, and its 413 is then answered as a 413 too.
MESSAGE_MAX_BYTES = MAX_BODY_BYTES // 4
MESSAGE_MAX_PARTS = 1000  # their JSON takes at most some 26 kB beside the text
# A /start body carries a restarted session's earlier conversation, counted as the JSON it is
# sent as: half the cap, leaving the other half to the harness's argv and environment.
HISTORY_MAX_BYTES = MAX_BODY_BYTES // 2


def utf8_size(texts: Iterable[str]) -> int:
    """The bytes ``texts`` take together in UTF-8."""
    return sum(len(text.encode()) for text in texts)


def json_size(value: Any) -> int:
    """The bytes ``value`` takes in a request body as the runner client sends it (JSON in
    UTF-8, escapes included), plus one for the comma that joins it to its neighbour."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) + 1


def require_at_most(
    what: str, texts: Iterable[str], limit: int, counted: str = "bytes (UTF-8)"
) -> None:
    """``TooLarge`` (413) naming ``what``, its size and ``limit`` when ``texts`` exceed it."""
    size = utf8_size(texts)
    if size > limit:
        raise TooLarge(f"{what} is too large: {size} {counted}, at most {limit}")


def runner_refusal(what: str) -> str:
    """Why a request the runner answered 413 failed (``what``: "command", "message")."""
    return (
        f"the sandbox refused the {what} as too large "
        f"(its runner takes at most {MAX_BODY_BYTES} bytes a request)"
    )
