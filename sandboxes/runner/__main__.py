"""``python -m sandboxes.runner --listen unix:PATH|tcp:HOST:PORT [...]`` (see the package docs)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys

from .recording import DEFAULT_MAX_BYTES
from .server import Config, serve

TOKEN_ENV = "LAP_RUNNER_TOKEN"  # noqa: S105 - a variable name, not a secret
PR_SET_DUMPABLE = 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.runner", description=__doc__)
    parser.add_argument("--listen", required=True, help="unix:PATH or tcp:HOST:PORT")
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="HOST:PORT=unix:PATH",
        help="forward a loopback TCP port to a unix socket (repeatable)",
    )
    parser.add_argument("--recording", metavar="PATH", help="write an asciicast v2 file here")
    parser.add_argument("--recording-max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N")
    parser.add_argument(
        "--token-file", metavar="PATH", help=f"read the token here, then remove it ({TOKEN_ENV})"
    )
    args = parser.parse_args(argv)
    # The token must not leak into the harness or /exec commands: drop it from our env, and
    # keep the harness (the same uid) out of our memory and /proc/<pid>/environ.
    token = os.environ.pop(TOKEN_ENV, "")
    if args.token_file:
        token = _take(args.token_file)
    if not token:
        parser.error(f"--token-file or {TOKEN_ENV} must be set")
    _not_dumpable()
    logging.basicConfig(
        level=logging.INFO, format="runner: %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per attach is noise
    config = Config(
        listen=args.listen,
        token=token,
        relays=args.relay,
        recording=args.recording,
        recording_max_bytes=args.recording_max_bytes,
    )
    try:
        asyncio.run(serve(config))
    except ValueError as exc:
        parser.error(str(exc))


def _take(path: str) -> str:
    """The token in ``path``, which is removed at once."""
    try:
        with open(path) as handle:
            token = handle.read().strip()
        os.unlink(path)
    except OSError:
        return ""
    return token


def _not_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): our /proc files turn root's and ptrace is refused, so
    processes of our own uid (the harness) cannot read our memory, where the token lives.
    Children get it back at exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


if __name__ == "__main__":
    main()
