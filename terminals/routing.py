"""WebSocket routes. Authentication happens in the consumer (tty token or cookie + Origin).

Only the session cookie is parsed here, not the user behind it: Channels' auth middleware
would look the user up before the consumer can accept, and a database that hangs would then
hold the handshake past daphne's timeout instead of ending in a clear close code.
"""

from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from django.urls import path, re_path

from terminals.consumers import no_terminal, terminal_bridge

websocket_urlpatterns = [
    path(
        "api/v1/managed_agents/sessions/<uuid:session_id>/tty",
        terminal_bridge,
        name="session-tty",
    ),
    # Anything else (a malformed id, a path trick) is closed with 4404, not a handshake 500.
    re_path(r"", no_terminal),
]

websocket_application = SessionMiddlewareStack(URLRouter(websocket_urlpatterns))
