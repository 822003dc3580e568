"""WebSocket routes. Authentication happens in the consumer (tty token or cookie + Origin)."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
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

websocket_application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
