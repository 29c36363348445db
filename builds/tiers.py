"""The product's tier table: every limit an account has starts here."""

from dataclasses import dataclass

from builds.choices import PriorityClass, Tier

MB = 1024 * 1024


@dataclass(frozen=True)
class TierSpec:
    tier: Tier
    priority_class: PriorityClass
    default_timeout_minutes: int
    max_timeout_minutes: int
    builds_per_month: int | None  # None: unlimited
    max_concurrent: int
    max_bundle_mb: int
    max_source_upload_mb: int  # one uploaded .tar.gz/.zip of an app's source


TIERS: dict[str, TierSpec] = {
    spec.tier: spec
    for spec in (
        TierSpec(Tier.FREE, PriorityClass.P3, 5, 5, 10, 1, 10, 50),
        TierSpec(Tier.STARTER, PriorityClass.P2, 10, 20, 100, 1, 50, 200),
        TierSpec(Tier.PRO, PriorityClass.P1, 15, 25, 500, 2, 100, 500),
        # Enterprise bundle size is set per account (EnterpriseLimit); 200 MB until it is.
        TierSpec(Tier.ENTERPRISE, PriorityClass.P0, 30, 30, None, 5, 200, 1024),
    )
}

# Bounds that keep an operator's typo from becoming a limit.
MAX_CONCURRENT_OVERRIDE = 100
MAX_BUNDLE_MB_OVERRIDE = 4096
