"""Websocket helpers shared by every app's consumers."""

from urllib.parse import urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings

FORBIDDEN_ORIGIN = 4403


class ForbiddenOrigin(AsyncWebsocketConsumer):
    """Accepts, then closes with 4403: a refused handshake would show browsers only 1006."""

    async def connect(self):
        await self.accept()
        await self.close(FORBIDDEN_ORIGIN)


class AllowedHostsOrigin(OriginValidator):
    """A browser's ``Origin`` must name one of ALLOWED_HOSTS (cross-site websocket hijacking).

    A client that sends no Origin is not a browser and carries no ambient cookies, so it goes
    on to the consumer's own authentication (API tokens from CI systems).
    """

    def __init__(self, application):
        super().__init__(application, settings.ALLOWED_HOSTS)

    async def __call__(self, scope, receive, send):
        origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
        if not origins:
            return await self.application(scope, receive, send)
        try:
            origin = urlparse(origins[0].decode("latin-1"))
        except (UnicodeDecodeError, ValueError):
            origin = None
        if origin is not None and self.validate_origin(origin):
            return await self.application(scope, receive, send)
        return await ForbiddenOrigin.as_asgi()(scope, receive, send)
