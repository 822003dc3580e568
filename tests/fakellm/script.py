"""What the fake model says: scripted turns, independent of the API that carries them.

A test queues ``Turn``s on a gateway; each model request that the gateway's ``match`` picks
(by default: requests that offer tools, i.e. an agent's main loop) takes the next turn, so a
test can make the model call a tool and then answer in text once the tool result comes back.
Side requests (titles, quota probes) and requests after the script ran out get the
gateway's ``fallback`` turn.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Thinking:
    """A reasoning block (Anthropic ``thinking``; OpenAI ``reasoning`` summary)."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model calls tool ``name`` with ``input`` (e.g. ``ToolCall("Bash", {"command": …})``)."""

    name: str
    input: dict
    id: str = field(default_factory=lambda: "toolu_" + secrets.token_hex(12))


Block = Text | Thinking | ToolCall


@dataclass
class Turn:
    """One assistant reply.

    ``hold``: when streaming, the gateway sends the first text delta, then waits until the
    event is set (or ``hold_timeout`` passes) before the rest: a turn that is still running,
    for abort tests. ``delay`` sleeps between streamed deltas. ``status``: the request is
    answered with this HTTP error instead (``failure``), e.g. a 503 that clients retry, after
    ``retry_after_ms`` if given (the ``retry-after-ms`` header clients honour).
    """

    blocks: list[Block]
    hold: threading.Event | None = None
    hold_timeout: float = 120.0
    delay: float = 0.0
    status: int | None = None
    retry_after_ms: int | None = None

    @property
    def calls_tools(self) -> bool:
        return any(isinstance(block, ToolCall) for block in self.blocks)

    def text(self) -> str:
        return "".join(block.text for block in self.blocks if isinstance(block, Text))


def failure(status: int = 503, retry_after_ms: int | None = None) -> Turn:
    """A model request answered with HTTP ``status`` and the API's error body."""
    return Turn([], status=status, retry_after_ms=retry_after_ms)


def as_turn(item: Turn | Block | str) -> Turn:
    if isinstance(item, Turn):
        return item
    if isinstance(item, str):
        return Turn([Text(item)])
    return Turn([item])


def chunks(text: str, size: int = 8) -> list[str]:
    """``text`` cut into streaming deltas (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
