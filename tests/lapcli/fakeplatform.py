"""A small stand-in for the LAP platform, as a plain ASGI app served by the real daphne.

It speaks the subset of the REST API and terminal protocol that ``lap`` uses (DESIGN.md), with
real behaviour where the CLI's correctness depends on it: sessions go through phases before they
are ready, a terminal session owns a real PTY running bash (so ``stty size`` inside sees resizes),
the screen is replayed to every new attach, ``exec`` runs real processes and streams NDJSON, and
chat replies stream as Server-Sent Events. ``GET /_test/sessions/{id}`` exposes what the server
saw (resize frames, aborts, tty handshakes) so tests can assert it; ``POST`` to it drops every
attached terminal (close code 4503: unplanned, not a refusal) and rotates the ``tty_token``.

Settings come from the environment: ``FAKE_LAP_KEY`` (the API key), ``FAKE_LAP_PAGE_MAX``
(largest page the server returns; default 50, like the reference), ``FAKE_LAP_DIR`` (where
session working directories go).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import secrets
import signal
import struct
import tempfile
import termios
import uuid
from dataclasses import dataclass, field
from typing import Any

API = "/api/v1/managed_agents"
KEY = os.environ.get("FAKE_LAP_KEY", "test-key-0123456789")
PAGE_MAX = int(os.environ.get("FAKE_LAP_PAGE_MAX", "50"))
PHASES = ("claiming_warm", "creating_sandbox", "starting_harness")
PHASE_SECONDS = 0.15
DROP = b""  # queued to a terminal client: close its socket unexpectedly


@dataclass
class Agent:
    name: str
    harness_id: str
    supports_tui: bool
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "harness_id": self.harness_id,
            "supports_tui": self.supports_tui,
            "model": "fake",
            "created_at": "2026-01-01T00:00:00Z",
        }


@dataclass
class Session:
    agent: Agent
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "creating"
    phase: str = "creating_sandbox"
    failure_reason: str | None = None
    tty_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    workdir: str = field(
        default_factory=lambda: tempfile.mkdtemp(dir=os.environ.get("FAKE_LAP_DIR"))
    )
    pty: Pty | None = None
    resizes: list[list[int]] = field(default_factory=list)
    aborts: int = 0
    tty_tokens_seen: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        has_tty = self.agent.supports_tui and self.status == "ready"  # as the platform says
        return {
            "id": self.id,
            "agent_id": self.agent.id,
            "status": self.status,
            "phase": self.phase,
            "phase_detail": None,
            "failure_reason": self.failure_reason,
            "supports_tui": self.agent.supports_tui,
            "tty_url": f"{API}/sessions/{self.id}/tty" if has_tty else None,
            "tty_token": self.tty_token if has_tty else None,
            "created_at": "2026-01-01T00:00:00Z",
        }


class Pty:
    """bash on a real pseudo-terminal; every byte it prints is kept (replayed on attach) and
    fanned out to the attached clients' queues."""

    def __init__(self, cwd: str) -> None:
        self.scrollback = bytearray()
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.exit_code: int | None = None
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(cwd)
            env = {"PATH": os.environ["PATH"], "HOME": cwd, "TERM": "xterm", "PS1": "$ "}
            os.execvpe("bash", ["bash", "--noprofile", "--norc", "-i"], env)  # noqa: S606
        self.pid, self.fd = pid, fd
        self.resize(80, 24)
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if data:
            self.scrollback += data
            for queue in self.clients:
                queue.put_nowait(data)
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        _, status = os.waitpid(self.pid, 0)
        self.exit_code = os.waitstatus_to_exitcode(status)
        for queue in self.clients:
            queue.put_nowait(None)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


AGENTS: list[Agent] = [
    Agent("shell", "shell", True),
    Agent("chat", "echo-chat", False),
    Agent("broken", "shell", True),
    Agent("slow", "shell", True),  # stays starting_harness for a minute
    *(Agent(f"filler-{n:03d}", "opencode", False) for n in range(119)),
]
SESSIONS: dict[str, Session] = {}


def find_agent(ref: str) -> Agent | None:
    return next((a for a in AGENTS if ref in (a.id, a.name)), None)


async def bring_up(session: Session) -> None:
    for phase in PHASES:
        session.phase = phase
        await asyncio.sleep(PHASE_SECONDS)
    if session.agent.name == "slow":
        await asyncio.sleep(60)
    if session.status == "dead":  # stopped while it came up
        return
    if session.agent.name == "broken":
        session.status, session.phase = "failed", "starting_harness"
        session.failure_reason = "harness exited during start-up (exit status 127)"
        return
    if session.agent.supports_tui:
        session.pty = Pty(session.workdir)
    session.status, session.phase = "ready", "ready"


# -- HTTP ---------------------------------------------------------------------------------------


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def start_stream(send: Any, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def chunk(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


def authorized(scope: dict[str, Any], token: str) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"authorization", b"").decode() == f"Bearer {token}"


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    method, path = scope["method"], scope["path"]
    query = dict(
        pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
    )
    body = await read_body(receive)
    if path.startswith("/_test/sessions/"):
        session = SESSIONS[path.rsplit("/", 1)[1]]
        if method == "POST" and session.pty:
            session.tty_token = secrets.token_urlsafe(24)
            for queue in session.pty.clients:
                queue.put_nowait(DROP)
        payload = {
            "resizes": session.resizes,
            "tty_tokens_seen": session.tty_tokens_seen,
            "aborts": session.aborts,
            "messages": session.messages,
        }
        return await respond(send, 200, payload)
    if not authorized(scope, KEY):
        return await respond(send, 401, {"error": "unauthorized"})
    rest = path.removeprefix(API)
    if method == "GET" and rest == "/agents":
        limit = max(1, min(int(query.get("limit", 50)), PAGE_MAX))
        offset = int(query.get("offset", 0))
        page = [a.to_api() for a in AGENTS[offset : offset + limit]]
        return await respond(
            send, 200, {"data": page, "total": len(AGENTS), "limit": limit, "offset": offset}
        )
    if match := re.fullmatch(r"/agents/([^/]+)/session", rest):
        agent = find_agent(match.group(1))
        if method != "POST" or agent is None:
            return await respond(send, 404, {"error": f"agent '{match.group(1)}' not found"})
        session = Session(agent)
        SESSIONS[session.id] = session
        asyncio.get_running_loop().create_task(bring_up(session))
        return await respond(send, 200, session.to_api())
    if method == "GET" and rest == "/sessions":
        found = [
            s.to_api() for s in SESSIONS.values() if query.get("agent_id") in (None, s.agent.id)
        ]
        return await respond(send, 200, {"data": found, "total": len(found), "offset": 0})
    match = re.fullmatch(r"/sessions/([^/]+)(/[a-z_]+)?", rest)
    session = SESSIONS.get(match.group(1)) if match else None
    if session is None:
        return await respond(send, 404, {"error": "session not found"})
    action = match.group(2) if match else None
    if action is None and method == "GET":
        return await respond(send, 200, session.to_api())
    if action is None and method == "DELETE":
        if session.pty:
            session.pty.kill()
        session.status = "dead"
        return await respond(send, 200, {"id": session.id, "status": "deleted"})
    if session.status != "ready":
        return await respond(send, 409, {"error": "session not ready"})
    if action == "/exec":
        return await run_exec(send, session, json.loads(body))
    if action == "/message_stream":
        return await stream_reply(receive, send, session, json.loads(body)["text"])
    if action == "/abort":
        session.aborts += 1
        return await respond(send, 200, {"ok": True})
    return await respond(send, 404, {"error": "no such endpoint"})


async def run_exec(send: Any, session: Session, request: dict[str, Any]) -> None:
    process = await asyncio.create_subprocess_exec(
        *request["argv"],
        cwd=session.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await start_stream(send, b"application/x-ndjson")

    async def pump(reader: asyncio.StreamReader, name: str) -> None:
        while line := await reader.readline():
            frame = {"stream": name, "data": line.decode(errors="replace")}
            await chunk(send, json.dumps(frame).encode() + b"\n")

    assert process.stdout and process.stderr
    await asyncio.gather(pump(process.stdout, "stdout"), pump(process.stderr, "stderr"))
    code = await process.wait()
    await chunk(send, json.dumps({"exit_code": code}).encode() + b"\n")
    await send({"type": "http.response.body", "body": b""})


async def stream_reply(receive: Any, send: Any, session: Session, text: str) -> None:
    """Echo the message back word by word; "slow" makes a reply that takes 20 s."""
    session.messages.append(text)
    await start_stream(send, b"text/event-stream")
    words = [f"{w} " for w in f"you said: {text}".split()]
    delay = 1.0 if text == "slow" else 0.01
    if text == "slow":
        words = words * 20
    await chunk(send, b'data: {"type":"ready"}\n\n')
    for word in words:
        part = {"type": "text", "id": "p1", "text": word}
        event = {"type": "message.part.updated", "properties": {"part": part, "delta": word}}
        frame = json.dumps({"type": "harness_event", "event": event})
        await chunk(send, f"data: {frame}\n\n".encode())
        await asyncio.sleep(delay)
    await chunk(send, b'data: {"type":"done"}\n\n')
    await send({"type": "http.response.body", "body": b""})


# -- WebSocket terminal ---------------------------------------------------------------------------


async def tty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    match = re.fullmatch(rf"{API}/sessions/([^/]+)/tty", scope["path"])
    session = SESSIONS.get(match.group(1)) if match else None
    await send({"type": "websocket.accept"})
    if session is not None:
        session.tty_tokens_seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
    if session is None:
        return await send({"type": "websocket.close", "code": 4404})
    if not authorized(scope, session.tty_token):
        return await send({"type": "websocket.close", "code": 4401})
    if session.pty is None or session.status != "ready":
        return await send({"type": "websocket.close", "code": 4409})
    term = session.pty
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    await send({"type": "websocket.send", "bytes": bytes(term.scrollback)})
    term.clients.add(queue)

    async def forward() -> None:
        while (data := await queue.get()) is not None:
            if data is DROP:
                # daphne (autobahn) can only send 1000 or 3000-4999.
                await send({"type": "websocket.close", "code": 4503})
                return
            await send({"type": "websocket.send", "bytes": data})
        frame = json.dumps({"type": "exit", "code": term.exit_code})
        await send({"type": "websocket.send", "text": frame})
        await send({"type": "websocket.close", "code": 1000})
        session.status = "dead"

    forwarder = asyncio.create_task(forward())
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes"):
                term.write(message["bytes"])
            elif message.get("text"):
                control = json.loads(message["text"])
                if control.get("type") == "resize":
                    session.resizes.append([control["cols"], control["rows"]])
                    term.resize(control["cols"], control["rows"])
    finally:
        term.clients.discard(queue)
        forwarder.cancel()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await http_app(scope, receive, send)
    elif scope["type"] == "websocket":
        await tty_app(scope, receive, send)
