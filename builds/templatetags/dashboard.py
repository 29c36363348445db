from django import template

from builds import dashboard

register = template.Library()


@register.simple_tag
def dashboard_snapshot():
    return dashboard.snapshot()


@register.filter
def duration(seconds):
    """``93`` → ``1m 33s``; empty for no value."""
    if seconds is None or seconds == "":
        return "–"
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
