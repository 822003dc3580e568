"""WebSocket routes. Authentication happens in the consumer (tty token or cookie + Origin)."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import path

from terminals.consumers import terminal_bridge

websocket_urlpatterns = [
    path(
        "api/v1/managed_agents/sessions/<uuid:session_id>/tty",
        terminal_bridge,
        name="session-tty",
    ),
]

websocket_application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
