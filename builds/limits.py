"""What an account may do right now: tier defaults, Enterprise overrides, then add-ons."""

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from builds.choices import PriorityClass, Tier
from builds.tiers import MB, TIERS


@dataclass(frozen=True)
class EffectiveLimits:
    tier: str
    priority_class: PriorityClass
    timeout_minutes: int  # the default for a job and the most a job may ask for
    tier_max_timeout_minutes: int
    addon_minutes: int
    builds_per_month: int | None  # None: unlimited
    max_concurrent: int
    max_bundle_mb: int
    max_source_upload_mb: int

    @property
    def timeout_seconds(self) -> int:
        return self.timeout_minutes * 60

    @property
    def max_bundle_bytes(self) -> int:
        return self.max_bundle_mb * MB

    @property
    def max_source_upload_bytes(self) -> int:
        return self.max_source_upload_mb * MB

    def as_dict(self) -> dict:
        return {
            "tier": self.tier,
            "priority_class": self.priority_class,
            "timeout_minutes": self.timeout_minutes,
            "tier_max_timeout_minutes": self.tier_max_timeout_minutes,
            "addon_minutes": self.addon_minutes,
            "builds_per_month": self.builds_per_month,
            "max_concurrent": self.max_concurrent,
            "max_bundle_mb": self.max_bundle_mb,
            "max_source_upload_mb": self.max_source_upload_mb,
        }


def _enterprise_override(account):
    if account.tier != Tier.ENTERPRISE:
        return None
    return getattr(account, "enterprise_limit", None)


def concurrency_limit(account) -> int:
    """Running jobs this account may have at once (the claim's hot path: no add-on query)."""
    override = _enterprise_override(account)
    if override is not None and override.max_concurrent_builds:
        return override.max_concurrent_builds
    return TIERS[account.tier].max_concurrent


def _base_timeout_minutes(account) -> int:
    """The tier's default timeout, or the Enterprise contract's."""
    override = _enterprise_override(account)
    if override is not None and override.max_timeout_minutes:
        return override.max_timeout_minutes
    return TIERS[account.tier].default_timeout_minutes


def _active_addon_minutes(account, now: dt.datetime) -> int:
    return sum(
        addon.minutes
        for addon in account.timeout_addons.all()
        if addon.active and (addon.ended_at is None or addon.ended_at > now)
    )


def timeout_limit_minutes(account, now: dt.datetime | None = None) -> int:
    """effective_limits(account).timeout_minutes, without reading the add-ons when they
    cannot change it (the base timeout is the tier's maximum already, as for Free and
    Enterprise): every submission asks."""
    timeout = _base_timeout_minutes(account)
    ceiling = TIERS[account.tier].max_timeout_minutes
    if timeout >= ceiling:
        return ceiling
    return min(timeout + _active_addon_minutes(account, now or timezone.now()), ceiling)


def effective_limits(account, now: dt.datetime | None = None) -> EffectiveLimits:
    """The one answer to "what are this account's limits now".

    Start from the tier, let an Enterprise contract override (Enterprise accounts only), add
    the active timeout add-ons, and never go above the tier's maximum timeout.
    """
    spec = TIERS[account.tier]
    bundle_mb = spec.max_bundle_mb
    override = _enterprise_override(account)
    if override is not None:
        bundle_mb = override.max_bundle_size_mb or bundle_mb
    addon_minutes = _active_addon_minutes(account, now or timezone.now())
    return EffectiveLimits(
        tier=account.tier,
        priority_class=spec.priority_class,
        timeout_minutes=min(
            _base_timeout_minutes(account) + addon_minutes, spec.max_timeout_minutes
        ),
        tier_max_timeout_minutes=spec.max_timeout_minutes,
        addon_minutes=addon_minutes,
        builds_per_month=spec.builds_per_month,
        max_concurrent=concurrency_limit(account),
        max_bundle_mb=bundle_mb,
        max_source_upload_mb=spec.max_source_upload_mb,
    )
