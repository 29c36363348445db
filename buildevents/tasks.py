"""django-q2 entry points of build events."""

from buildevents import notifications


def send_notification_emails(notification_ids):
    """Mail build notifications to their staff users (each at most once)."""
    return notifications.send_notification_emails(notification_ids)


def deliver_webhook(delivery_id):
    """One signed attempt at a webhook delivery; a failure schedules the next with backoff."""
    return notifications.deliver_webhook(delivery_id)
