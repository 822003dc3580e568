"""``python -m sandboxes.runner --listen unix:PATH|tcp:HOST:PORT [...]`` (see the package docs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .recording import DEFAULT_MAX_BYTES
from .server import Config, serve

TOKEN_ENV = "LAP_RUNNER_TOKEN"  # noqa: S105 - a variable name, not a secret


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
    args = parser.parse_args(argv)
    # The token must not leak into the harness or /exec commands: drop it from our env.
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        parser.error(f"{TOKEN_ENV} must be set")
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


if __name__ == "__main__":
    main()
