"""ASGI entry point: HTTP goes to Django, ``/ws/...`` websockets to Channels consumers."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildhub.settings")
# Under ASGI each request's sync code runs in a thread of its own, so a persistent database
# connection is never reused: it stays open until its thread is collected, and under load
# they pile up past PostgreSQL's max_connections. The web process closes them per request
# (Django's advice for ASGI); workers and commands keep CONN_MAX_AGE's default. Only when
# this module starts Django: imported into a configured process (tests), it changes nothing
# that process's children would inherit.
if not settings.configured:
    os.environ.setdefault("CONN_MAX_AGE", "0")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up first
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from buildhub.routing import websocket_urlpatterns  # noqa: E402
from buildhub.websocket import AllowedHostsOrigin  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOrigin(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
