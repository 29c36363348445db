"""The build banner and the unread notification count on every admin page (staff only)."""

from django import template
from django.db import DatabaseError

from buildevents import notifications, reports

register = template.Library()


def banner_text(status: dict) -> str:
    """ "Building: stage X, 2m31s" or "stale: no heartbeat for 3m" (banner.js says the same)."""
    run = status.get("activeRun")
    if not run:
        return ""
    if run["status"] == "stale":
        silent = run["silentFor"]
        return (
            f"stale: no heartbeat for {silent // 60}m"
            if silent >= 60
            else (f"stale: no heartbeat for {silent}s")
        )
    stage = f"stage {run['stage']}, " if run["stage"] else ""
    return f"Building: {stage}{run['elapsedText']}"


def _is_staff(context) -> bool:
    user = context.get("user")
    return bool(user and user.is_authenticated and user.is_staff)


@register.inclusion_tag("buildevents/banner.html", takes_context=True)
def build_status_banner(context):
    if not _is_staff(context):
        return {"show": False}
    try:
        status = reports.build_status()
    except DatabaseError:  # the admin page still renders; the websocket fills the banner in
        status = {"running": False, "activeRun": None}
    return {"show": True, "status": status, "text": banner_text(status)}


@register.simple_tag(takes_context=True)
def unread_notification_count(context) -> int:
    return notifications.unread_count(context.get("user")) if _is_staff(context) else 0
