"""HTTP (Django) and WebSocket (Channels) in one ASGI app, served by daphne."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lapsite.settings")
# Django must be set up before anything imports models (consumers do).
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from terminals.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": django_application, "websocket": websocket_application})
