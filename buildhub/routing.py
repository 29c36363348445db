"""Websocket URL routes of every app, served by ``buildhub.asgi``."""

from buildevents.routing import websocket_urlpatterns as buildevents_websockets
from builds.routing import websocket_urlpatterns as builds_websockets

websocket_urlpatterns = [*builds_websockets, *buildevents_websockets]
