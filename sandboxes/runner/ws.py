"""One attached client on /tty, on top of websockets' Sans-I/O protocol.

The runner does its own I/O so that fan-out stays synchronous: the PTY reader callback writes
each output frame straight into every client's asyncio transport, with no queue hand-off or
task switch per chunk. The transport's write buffer is the client's bounded queue — once it
holds more than ``max_buffer`` bytes the client is closed with 4408 and gets nothing more.
Above ``PAUSE_BYTES`` a client counts as backed up; the terminal stops reading the PTY only
while every client is backed up (see ``Terminal``), so output flows at the pace of the
fastest client and a slower one falls behind until it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from .protocol import (
    CLOSE_TOO_SLOW,
    MAX_MESSAGE,
    MAX_SIZE,
    MSG_ERROR,
    MSG_PING,
    MSG_PONG,
    MSG_RESIZE,
    REASON_TOO_SLOW,
)

log = logging.getLogger(__name__)

MAX_BUFFER = 4 * 1024 * 1024
PAUSE_BYTES = 1024 * 1024
CLOSE_TIMEOUT = 10.0  # how long a closing client may take to answer our close frame

DATA_OPCODES = (Opcode.BINARY, Opcode.TEXT, Opcode.CONT)  # a CONT frame carries either


def _dimension(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIZE:
        return value
    return None


class TtyClient:
    """A WebSocket connection whose handshake request has already been read.

    ``on_input(client, data)`` gets keystrokes, ``on_resize(client, cols, rows)`` resize
    requests; ``size`` is the client's last requested size (None until it sends one).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._transport.set_write_buffer_limits(high=PAUSE_BYTES, low=PAUSE_BYTES // 4)
        self._max_buffer = max_buffer
        self._protocol = ServerProtocol(max_size=MAX_MESSAGE)
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self.size: tuple[int, int] | None = None

    def handshake(self, head: bytes) -> bool:
        """Answer the upgrade request ``head``; False if it was not a valid handshake."""
        protocol = self._protocol
        protocol.receive_data(head)
        events = protocol.events_received()
        if not events:
            self._flush()
            return False
        protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
        self._flush()
        return protocol.state is State.OPEN

    @property
    def is_open(self) -> bool:
        return self._protocol.state is State.OPEN

    @property
    def backed_up(self) -> bool:
        """More than ``PAUSE_BYTES`` of output wait in this client's buffer."""
        return self._transport.get_write_buffer_size() > PAUSE_BYTES

    async def drained(self) -> None:
        """Return once the client's buffer fell back to a quarter of ``PAUSE_BYTES``."""
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    def send_binary(self, data: bytes) -> None:
        """Queue an output frame; closes the client with 4408 when its buffer overflows."""
        if self._protocol.state is not State.OPEN:
            return
        self._protocol.send_binary(data)
        self._flush()
        if self._transport.get_write_buffer_size() > self._max_buffer:
            log.info("closing a /tty client that fell behind")
            self.close(CLOSE_TOO_SLOW, REASON_TOO_SLOW)

    def send_json(self, value: dict[str, object]) -> None:
        if self._protocol.state is State.OPEN:
            self._protocol.send_text(json.dumps(value).encode())
            self._flush()

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the connection is dropped if it does not finish."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._transport.abort)

    def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._transport.write(data)
            else:  # websockets asks for the end of the stream
                self._transport.close()

    async def serve(
        self,
        on_input: Callable[[TtyClient, bytes], None],
        on_resize: Callable[[TtyClient, int, int], None],
    ) -> None:
        """Read frames until the connection closes."""
        protocol = self._protocol
        while protocol.state is not State.CLOSED:
            try:
                data = await self._reader.read(65536)
            except ConnectionError:
                data = b""
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            for frame in protocol.events_received():  # frames only, after the handshake
                if isinstance(frame, Frame) and frame.opcode in DATA_OPCODES:
                    data_bytes = bytes(frame.data)  # the same object when it is bytes already
                    self._on_data_frame(frame.opcode, data_bytes, frame.fin, on_input, on_resize)
            self._flush()
            if not data:
                break
        self._transport.close()

    def _on_data_frame(
        self,
        opcode: Opcode,
        data: bytes,
        fin: bool,
        on_input: Callable[[TtyClient, bytes], None],
        on_resize: Callable[[TtyClient, int, int], None],
    ) -> None:
        if opcode is Opcode.CONT:
            self._fragments.append(data)
            if not fin:
                return
            opcode, data = self._fragment_opcode or Opcode.BINARY, b"".join(self._fragments)
            self._fragments, self._fragment_opcode = [], None
        elif not fin:
            self._fragments, self._fragment_opcode = [data], opcode
            return
        if opcode is Opcode.BINARY:
            on_input(self, data)
            return
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            on_input(self, data)
        elif message.get("type") == MSG_RESIZE:
            cols, rows = _dimension(message.get("cols")), _dimension(message.get("rows"))
            if cols and rows:
                self.size = (cols, rows)
                on_resize(self, cols, rows)
            else:
                message = f"resize needs integer cols and rows from 1 to {MAX_SIZE}"
                self.send_json({"type": MSG_ERROR, "code": "invalid_resize", "error": message})
        elif message.get("type") == MSG_PING:
            self.send_json({"type": MSG_PONG})
