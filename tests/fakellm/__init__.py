"""Fake LLM gateways for tests: the Anthropic Messages API and the OpenAI Responses and Chat
Completions APIs over real TLS on 127.0.0.1, recording every request (see ``gateway``)."""

from .gateway import ANTHROPIC, CHAT, RESPONSES, FakeGateway, Request, offers_tools
from .script import Text, Thinking, ToolCall, Turn, failure

__all__ = [
    "ANTHROPIC",
    "CHAT",
    "RESPONSES",
    "FakeGateway",
    "Request",
    "Text",
    "Thinking",
    "ToolCall",
    "Turn",
    "failure",
    "offers_tools",
]
