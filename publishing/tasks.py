"""django-q2 entry points of publishing."""

from publishing import health


def send_health_notice(app_id, message):
    """Mail an account that a release was halted or rolled back for its failure rate."""
    return health.send_notice(app_id, message)
