"""The in-sandbox runner: holds the harness PTY and serves it to the platform.

Runs inside every sandbox (``python -m sandboxes.runner --listen ...``), on Python 3.11 or
newer, importing only the standard library, ``pyte`` and ``websockets``: never Django or the
platform. ``docs/runner-protocol.md`` is the contract; in short:

- ``GET /healthz``, ``POST /start``, ``POST /exec`` (streamed NDJSON), ``GET /recording``
  and the WebSocket ``/tty``, each authenticated with ``Authorization: Bearer <token>``
  (``--token-file`` or ``LAP_RUNNER_TOKEN``, both removed at start-up; the runner is then
  non-dumpable, so the harness under the same uid cannot read it from its memory).
- An API harness (``/start`` with ``api``: claude-agent-sdk, opencode) runs without a PTY,
  one turn at a time: ``POST /turn`` streams the turn's events as NDJSON, ``POST /abort``
  stops it, ``GET /events`` follows every turn.
- ``/tty`` fans the PTY out to any number of clients; each new client first gets one frame
  with the scrollback and the current screen (``screen.py``), then the live stream. A client
  that falls behind is closed with 4408, never waited for (``ws.py``).
- On SIGTERM the harness's process group is killed and clients are closed with 1001.

Modules: ``server`` (routing, auth, lifecycle), ``terminal`` (PTY and fan-out), ``screen``
(scrollback ring and screen model), ``ws`` (WebSocket client), ``httpio`` (minimal HTTP),
``execute`` (/exec), ``recording`` (asciicast v2), ``relay`` (--relay), ``protocol``
(wire constants shared with the platform); for API harnesses ``turns`` (their endpoints),
``conversation`` (one turn at a time, fan-out, history), ``sdk`` and ``sdk_worker`` (the
Agent SDK), ``opencode`` and ``loopback`` (``opencode serve``), ``child`` (their processes).
"""
