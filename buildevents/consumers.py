from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from buildevents import reports
from buildevents.live import STATUS_GROUP


class BuildStatusConsumer(AsyncJsonWebsocketConsumer):
    """The admin banner's feed: the current build status now, then every change (staff only)."""

    async def connect(self):
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_staff):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(STATUS_GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(reports.build_status)())

    async def disconnect(self, code):
        await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Any message asks for the status again (a page coming back from the background)."""
        await self.send_json(await database_sync_to_async(reports.build_status)())

    async def build_status(self, message):
        await self.send_json(message["status"])
