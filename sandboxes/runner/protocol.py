"""Wire constants of the runner protocol (``docs/runner-protocol.md``).

The platform side (``terminals/protocol.py``, ``sandboxes/runner_client.py``) imports these
names instead of repeating the numbers.
"""

from __future__ import annotations

# WebSocket close codes sent by the runner on /tty.
CLOSE_NORMAL = 1000  # the harness exited; a {"type": "exit"} frame came first
CLOSE_GOING_AWAY = 1001  # the runner is shutting down (SIGTERM)
CLOSE_TOO_SLOW = 4408  # the client fell behind its bounded output queue
CLOSE_NOT_STARTED = 4409  # attached before POST /start
CLOSE_START_FAILED = 4500  # the harness exited, and could not be started again for this client

REASON_TOO_SLOW = "client too slow"
REASON_NOT_STARTED = "not started"
REASON_GOING_AWAY = "runner shutting down"
REASON_START_FAILED = "the harness exited and could not start again"

# Text control frames (JSON objects with a "type").
MSG_RESIZE = "resize"  # client -> runner: {"type": "resize", "cols": C, "rows": R}
MSG_PING = "ping"  # client -> runner; answered with {"type": "pong"}
MSG_PONG = "pong"
MSG_EXIT = "exit"  # runner -> client: {"type": "exit", "code": N}
MSG_ERROR = "error"  # runner -> client: {"type": "error", "code": slug, "error": message}

MAX_MESSAGE = 1024 * 1024  # largest client message on /tty; larger ones end the connection
MAX_SIZE = 1000  # largest accepted cols/rows

TERM = "xterm-256color"
MAX_BODY_BYTES = 1 << 20  # larger request bodies get 413
