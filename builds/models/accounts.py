import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from builds import limits
from builds.choices import ADDON_MINUTES, AddOnKind, MembershipRole, Tier, TokenScope
from builds.tiers import MAX_BUNDLE_MB_OVERRIDE, MAX_CONCURRENT_OVERRIDE, TIERS

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class Account(models.Model):
    """A customer: the unit that owns apps, builds and tokens and that every limit applies to."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    blocked = models.BooleanField(default=False)
    blocked_reason = models.CharField(max_length=500, blank=True)
    blocked_at = models.DateTimeField(null=True, blank=True)
    members: "models.ManyToManyField[User, Membership]" = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="accounts", blank=True
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def tier_spec(self):
        return TIERS[self.tier]

    def effective_limits(self, now=None):
        return limits.effective_limits(self, now=now)


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(
        max_length=16, choices=MembershipRole.choices, default=MembershipRole.MEMBER
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "account"], name="membership_unique_user_account"
            )
        ]

    def __str__(self):
        return f"{self.user} in {self.account} ({self.role})"


class EnterpriseLimit(models.Model):
    """Per-account overrides agreed in an Enterprise contract; blank fields keep the tier value."""

    account = models.OneToOneField(
        Account, on_delete=models.CASCADE, related_name="enterprise_limit"
    )
    max_bundle_size_mb = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_BUNDLE_MB_OVERRIDE)],
        help_text=f"1 to {MAX_BUNDLE_MB_OVERRIDE} MB.",
    )
    max_timeout_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="At most the Enterprise tier's maximum timeout.",
    )
    max_concurrent_builds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_CONCURRENT_OVERRIDE)],
        help_text=f"1 to {MAX_CONCURRENT_OVERRIDE}.",
    )
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"Enterprise limits of {self.account}"

    def clean(self):
        errors = {}
        tier_max = TIERS[Tier.ENTERPRISE].max_timeout_minutes
        if self.max_timeout_minutes is not None and self.max_timeout_minutes > tier_max:
            errors["max_timeout_minutes"] = (
                f"The timeout is capped at the Enterprise tier's maximum of {tier_max} minutes."
            )
        account = getattr(self, "account", None)
        if account is not None and account.tier != Tier.ENTERPRISE:
            errors["account"] = (
                f"Enterprise limits apply to Enterprise accounts only; {account} is on "
                f"{account.get_tier_display()}."
            )
        if errors:
            raise ValidationError(errors)


class TimeoutAddOn(models.Model):
    """Extra build minutes on top of the default timeout, never beyond the tier's maximum."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="timeout_addons")
    kind = models.CharField(max_length=24, choices=AddOnKind.choices)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.get_kind_display()} for {self.account}"

    @property
    def minutes(self) -> int:
        return ADDON_MINUTES[self.kind]


class BuildUsage(models.Model):
    """Builds counted against one account's monthly quota; ``month`` is its first day (UTC)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="usage")
    month = models.DateField()
    builds_used = models.PositiveIntegerField(default=0)
    builds_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: unlimited.")
    addon_minutes = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-month", "account__name"]
        verbose_name_plural = "build usage"
        constraints = [
            models.UniqueConstraint(
                fields=["account", "month"], name="buildusage_unique_account_month"
            )
        ]

    def __str__(self):
        return f"{self.account} {self.month:%Y-%m}: {self.builds_used}/{self.builds_limit or '∞'}"


def hash_token_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is as safe here as a slow one.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A CI system's credential: ``bh_<key_id>_<secret>``; only the secret's hash is stored."""

    PREFIX = "bh_"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.PREFIX}{self.key_id}_…)"

    def clean(self):
        unknown = sorted(set(self.scopes or []) - set(TokenScope.values))
        if unknown:
            raise ValidationError({"scopes": f"Unknown scopes: {', '.join(unknown)}."})

    def set_new_secret(self) -> str:
        """Give this token a fresh key id and secret; returns the bearer value to show once."""
        self.key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)  # 256 bits
        self.secret_hash = hash_token_secret(secret)
        return f"{self.PREFIX}{self.key_id}_{secret}"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(hash_token_secret(secret), self.secret_hash)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())
