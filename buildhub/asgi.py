"""ASGI entry point: HTTP goes to Django (warm device update checks are answered in front of
it, see publishing.asgi), ``/ws/...`` websockets to Channels consumers."""

import gc
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
starting_django = not settings.configured
if starting_django:
    os.environ.setdefault("CONN_MAX_AGE", "0")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up first
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from buildhub.metrics import WebsocketGauge  # noqa: E402
from buildhub.routing import websocket_urlpatterns  # noqa: E402
from buildhub.websocket import AllowedHostsOrigin  # noqa: E402
from publishing.asgi import UpdateCheckEdge  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": UpdateCheckEdge(django_asgi_app),
        "websocket": WebsocketGauge(
            AllowedHostsOrigin(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
if starting_django:
    # Everything loaded so far lives as long as the process: kept out of the collector's
    # passes, which otherwise stall every request in flight for tens of milliseconds. Young
    # objects are collected every 50,000 allocations instead of 700 (a request makes
    # hundreds); measured with the update check benchmark, the memory stays flat.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
