"""The live build status pushed to staff browsers over the ``buildevents.status`` group."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from buildevents import reports

logger = logging.getLogger("buildhub.buildevents")

STATUS_GROUP = "buildevents.status"


def push_build_status() -> None:
    """Send the current status to every open admin page; the pages keep working without it."""
    try:
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(
            STATUS_GROUP, {"type": "build.status", "status": reports.build_status()}
        )
    except Exception:  # Redis down: the banner catches up on the next push
        logger.warning("could not push the build status", exc_info=True)
