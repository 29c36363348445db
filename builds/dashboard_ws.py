"""The operations dashboard's websocket: a fresh snapshot whenever the numbers change."""

import asyncio
import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from builds import dashboard

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class DashboardConsumer(AsyncWebsocketConsumer):
    """Staff sessions only. The server reads the numbers every ``DASHBOARD_REFRESH_SECONDS``
    and sends them when they differ from what the page has (the page itself never polls)."""

    channel_layer_alias = None  # it reads the database and needs no channel layer

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        self.sent = None
        self.loop = asyncio.ensure_future(self.send_changes())

    async def disconnect(self, code):
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.cancel()

    async def send_changes(self):
        while True:
            data = await database_sync_to_async(dashboard.snapshot)()
            comparable = {key: value for key, value in data.items() if key != "generated_at"}
            if comparable != self.sent:
                self.sent = comparable
                await self.send(text_data=json.dumps(data, cls=DjangoJSONEncoder))
            await asyncio.sleep(settings.DASHBOARD_REFRESH_SECONDS)
