from django.conf import settings
from django.db import models
from django.utils import timezone

from abuse.choices import (
    FlagPriority,
    FlagStatus,
    PatternKind,
    ReviewActionKind,
    SignalKind,
)
from builds.models import Account, Job


class AbuseSignal(models.Model):
    """One observation about an account: a submission (IP, app name) or a built bundle's hash.

    Rows are evidence and never edited, except that the IP address is removed once it is
    older than ``ABUSE_IP_RETENTION_DAYS``.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="abuse_signals")
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="abuse_signals"
    )
    kind = models.CharField(max_length=16, choices=SignalKind.choices)
    bundle_hash = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True, verbose_name="IP address")
    app_name = models.CharField(max_length=200, blank=True)
    # Lower-case letters and digits of app_name; the stem also drops the digits, so that
    # "Torch Light 2" finds "torchlight7" with one indexed lookup before the similarity test.
    app_name_key = models.CharField(max_length=200, blank=True)
    app_name_stem = models.CharField(max_length=200, blank=True)
    account_age_days = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="abusesignal_account_recent"),
            models.Index(
                fields=["ip", "created_at"],
                include=["account"],
                condition=models.Q(ip__isnull=False),
                name="abusesignal_ip",
            ),
            models.Index(
                fields=["bundle_hash", "created_at"],
                include=["account"],
                condition=~models.Q(bundle_hash=""),
                name="abusesignal_bundle_hash",
            ),
            models.Index(
                fields=["app_name_stem", "created_at"],
                include=["account", "app_name_key"],
                condition=~models.Q(app_name_stem=""),
                name="abusesignal_app_name_stem",
            ),
            # The retention purge: signals that still hold an IP, oldest first.
            models.Index(
                fields=["created_at"],
                condition=models.Q(ip__isnull=False),
                name="abusesignal_ip_expiry",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} by {self.account_id} at {self.created_at:%Y-%m-%d %H:%M}"


class Score(models.Model):
    """An account's current abuse score and which rule added what (recomputed on new signals).

    ``breakdown``: ``{"rules": [{"rule", "label", "points", "accounts", "detail"}],
    "linked_accounts": [account ids]}``.
    """

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="abuse_score")
    score = models.PositiveSmallIntegerField(default=0)
    breakdown = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-score"]
        indexes = [models.Index(fields=["-score"], name="abusescore_score")]

    def __str__(self):
        return f"{self.account_id}: {self.score}"


class Flag(models.Model):
    """An account in the review queue; at most one open flag per account."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="abuse_flags")
    status = models.CharField(max_length=16, choices=FlagStatus.choices, default=FlagStatus.OPEN)
    priority = models.CharField(
        max_length=8, choices=FlagPriority.choices, default=FlagPriority.NORMAL
    )
    score = models.PositiveSmallIntegerField(help_text="The account's score when last scored.")
    breakdown = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-score", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(status=FlagStatus.OPEN),
                name="abuseflag_one_open_per_account",
            )
        ]
        indexes = [models.Index(fields=["status", "-score"], name="abuseflag_queue")]

    def __str__(self):
        return f"Flag #{self.pk} on {self.account} ({self.score}, {self.status})"


class ConfirmedPattern(models.Model):
    """A bundle hash or IP a reviewer confirmed as abuse: accounts above the block threshold
    that match it are blocked without waiting for review."""

    kind = models.CharField(max_length=16, choices=PatternKind.choices)
    value = models.CharField(max_length=64)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(default=timezone.now)
    reason = models.TextField()
    flag = models.ForeignKey(
        Flag, null=True, blank=True, on_delete=models.SET_NULL, related_name="patterns"
    )

    class Meta:
        ordering = ["-confirmed_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="abusepattern_unique_value")
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.value}"


class ReviewAction(models.Model):
    """The audit trail: every decision about an account, by whom (or the system), when, why."""

    action = models.CharField(max_length=24, choices=ReviewActionKind.choices)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="abuse_reviews")
    flag = models.ForeignKey(
        Flag, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions"
    )
    patterns = models.ManyToManyField(ConfirmedPattern, blank=True, related_name="actions")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Kept if the user is deleted.")
    reason = models.TextField()
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "-created_at"], name="abusereview_account")]

    def __str__(self):
        return f"{self.get_action_display()} {self.account} by {self.actor_name}"
