import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Now

from buildevents.choices import (
    DeliveryStatus,
    EventKind,
    NotificationKind,
    RunEnv,
    RunOrigin,
    RunStatus,
)
from builds.models import Account


class BuildRun(models.Model):
    """One run of a customer's own build script, as reported by its lifecycle events."""

    run_id = models.UUIDField(unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="build_runs")
    env = models.CharField(max_length=16, choices=RunEnv.choices, blank=True)
    origin = models.CharField(max_length=16, choices=RunOrigin.choices, blank=True)
    command = models.CharField(max_length=1000, blank=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    status_reason = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    # Set from the database clock when any event arrives: the sweeper compares it with the
    # same clock, whatever the build host's clock says.
    last_heartbeat_at = models.DateTimeField(db_default=Now())
    current_stage = models.CharField(max_length=200, blank=True)
    # Client time of the event that set current_stage, so a late event cannot move it back.
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    repo = models.CharField(max_length=500, blank=True)
    branch = models.CharField(max_length=255, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["status", "last_heartbeat_at"], name="buildrun_status_heartbeat"),
            models.Index(fields=["command", "-started_at"], name="buildrun_command_started"),
        ]

    def __str__(self):
        return f"{self.command or 'build'} {str(self.run_id)[:8]} ({self.status})"


class BuildRunEvent(models.Model):
    """One lifecycle event of a run; heartbeats are not stored, they only touch the run."""

    run = models.ForeignKey(BuildRun, on_delete=models.CASCADE, related_name="events")
    event = models.CharField(max_length=24, choices=EventKind.choices)
    stage = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()  # when it happened, as the build host reported it
    received_at = models.DateTimeField(db_default=Now())
    payload = models.JSONField(default=dict, blank=True)
    event_id = models.CharField(max_length=100, blank=True)  # the client's, for idempotency

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "event_id"],
                condition=~models.Q(event_id=""),
                name="buildrunevent_unique_event_id",
            )
        ]

    def __str__(self):
        return f"{self.event} {self.stage}".strip()


class Notification(models.Model):
    """An in-app notice to one staff user; mailed once and counted as unread until read."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="build_notifications"
    )
    kind = models.CharField(max_length=24, choices=NotificationKind.choices)
    run = models.ForeignKey(
        BuildRun, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self):
        return self.title


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """An outside URL told about build notifications, with requests signed by its secret."""

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100, default=new_webhook_secret)
    kinds = models.JSONField(
        default=list, blank=True, help_text="Notification kinds to send; empty means all."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["url"]

    def __str__(self):
        return self.url

    def clean(self):
        errors = {}
        kinds = self.kinds if isinstance(self.kinds, list) else None
        if kinds is None or any(kind not in NotificationKind.values for kind in kinds):
            errors["kinds"] = f"A list of some of: {', '.join(NotificationKind.values)}."
        if not self.url.startswith(("https://", "http://")):
            errors["url"] = "An http:// or https:// URL."
        if errors:
            raise ValidationError(errors)

    def wants(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds


class WebhookDelivery(models.Model):
    """One notification on its way to one endpoint; retried with backoff until it lands."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    kind = models.CharField(max_length=24, choices=NotificationKind.choices)
    body = models.TextField()  # the exact JSON that is signed and sent
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_due"),
        ]

    def __str__(self):
        return f"{self.kind} → {self.endpoint_id} ({self.status})"
