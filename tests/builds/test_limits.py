import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.choices import AddOnKind, PriorityClass, Tier
from builds.limits import timeout_limit_minutes
from builds.models import EnterpriseLimit, TimeoutAddOn
from builds.tiers import TIERS
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db

# tier, queue, timeout (default = most a job may ask for), tier max, builds/month, concurrent, MB
TIER_TABLE = [
    (Tier.FREE, PriorityClass.P3, 5, 5, 10, 1, 10),
    (Tier.STARTER, PriorityClass.P2, 10, 20, 100, 1, 50),
    (Tier.PRO, PriorityClass.P1, 15, 25, 500, 2, 100),
    (Tier.ENTERPRISE, PriorityClass.P0, 30, 30, None, 5, 200),
]


@pytest.mark.parametrize(
    ("tier", "queue", "timeout", "tier_max", "builds", "concurrent", "bundle_mb"), TIER_TABLE
)
def test_tier_defaults(tier, queue, timeout, tier_max, builds, concurrent, bundle_mb):
    limits = make_account(tier).effective_limits()

    assert limits.priority_class == queue
    assert limits.timeout_minutes == timeout
    assert limits.timeout_seconds == timeout * 60
    assert limits.tier_max_timeout_minutes == tier_max
    assert limits.builds_per_month == builds
    assert limits.max_concurrent == concurrent
    assert limits.max_bundle_mb == bundle_mb
    assert limits.max_bundle_bytes == bundle_mb * 1024 * 1024
    assert limits.addon_minutes == 0


# tier, add-ons, expected timeout: add-ons raise the timeout but never past the tier max
ADDON_TABLE = [
    (Tier.FREE, [AddOnKind.RECURRING_MONTHLY], 5),
    (Tier.FREE, [AddOnKind.PERMANENT], 5),
    (Tier.STARTER, [AddOnKind.RECURRING_MONTHLY], 15),
    (Tier.STARTER, [AddOnKind.PERMANENT], 20),
    (Tier.STARTER, [AddOnKind.RECURRING_MONTHLY, AddOnKind.PERMANENT], 20),
    (Tier.PRO, [AddOnKind.RECURRING_MONTHLY], 20),
    (Tier.PRO, [AddOnKind.PERMANENT], 25),
    (Tier.PRO, [AddOnKind.RECURRING_MONTHLY, AddOnKind.PERMANENT], 25),
    (Tier.ENTERPRISE, [AddOnKind.PERMANENT], 30),
]


@pytest.mark.parametrize(("tier", "addons", "timeout"), ADDON_TABLE)
def test_addons_raise_timeout_up_to_the_tier_max(tier, addons, timeout):
    account = make_account(tier)
    for kind in addons:
        TimeoutAddOn.objects.create(account=account, kind=kind)

    limits = account.effective_limits()

    assert limits.timeout_minutes == timeout
    assert limits.addon_minutes == sum({"recurring_monthly": 5, "permanent": 10}[k] for k in addons)
    assert timeout_limit_minutes(account) == timeout  # what a submission is allowed


@pytest.mark.parametrize(("tier", "queries"), [(Tier.FREE, 0), (Tier.STARTER, 1), (Tier.PRO, 1)])
def test_a_submission_reads_the_addons_only_when_they_can_raise_the_timeout(
    tier, queries, django_assert_num_queries
):
    account = make_account(tier)
    TimeoutAddOn.objects.create(account=account, kind=AddOnKind.PERMANENT)
    account = type(account).objects.get(pk=account.pk)

    with django_assert_num_queries(queries):
        assert timeout_limit_minutes(account) == TIERS[tier].max_timeout_minutes


def test_inactive_and_ended_addons_do_not_count(starter_account):
    now = timezone.now()
    TimeoutAddOn.objects.create(account=starter_account, kind=AddOnKind.PERMANENT, active=False)
    TimeoutAddOn.objects.create(
        account=starter_account,
        kind=AddOnKind.RECURRING_MONTHLY,
        ended_at=now - dt.timedelta(days=1),
    )
    ending_later = TimeoutAddOn.objects.create(
        account=starter_account,
        kind=AddOnKind.RECURRING_MONTHLY,
        ended_at=now + dt.timedelta(days=3),
    )

    assert starter_account.effective_limits(now).timeout_minutes == 15
    assert timeout_limit_minutes(starter_account, now) == 15
    after_end = ending_later.ended_at + dt.timedelta(seconds=1)
    assert starter_account.effective_limits(after_end).timeout_minutes == 10
    assert timeout_limit_minutes(starter_account, after_end) == 10


# override fields, expected (timeout, concurrent, bundle MB)
OVERRIDE_TABLE = [
    ({}, (30, 5, 200)),
    ({"max_bundle_size_mb": 750}, (30, 5, 750)),
    ({"max_concurrent_builds": 12}, (30, 12, 200)),
    ({"max_timeout_minutes": 20}, (20, 5, 200)),
    ({"max_timeout_minutes": 20, "max_concurrent_builds": 1, "max_bundle_size_mb": 5}, (20, 1, 5)),
]


@pytest.mark.parametrize(("override", "expected"), OVERRIDE_TABLE)
def test_enterprise_overrides(enterprise_account, override, expected):
    EnterpriseLimit.objects.create(account=enterprise_account, **override)
    enterprise_account.refresh_from_db()

    limits = enterprise_account.effective_limits()

    assert (limits.timeout_minutes, limits.max_concurrent, limits.max_bundle_mb) == expected
    assert timeout_limit_minutes(enterprise_account) == expected[0]
    assert limits.builds_per_month is None


def test_enterprise_override_then_addons_stay_under_the_tier_max(enterprise_account):
    EnterpriseLimit.objects.create(account=enterprise_account, max_timeout_minutes=20)
    TimeoutAddOn.objects.create(account=enterprise_account, kind=AddOnKind.RECURRING_MONTHLY)
    enterprise_account.refresh_from_db()
    assert enterprise_account.effective_limits().timeout_minutes == 25
    assert timeout_limit_minutes(enterprise_account) == 25

    TimeoutAddOn.objects.create(account=enterprise_account, kind=AddOnKind.PERMANENT)
    assert enterprise_account.effective_limits().timeout_minutes == 30
    assert timeout_limit_minutes(enterprise_account) == 30


def test_overrides_only_apply_to_enterprise_accounts(enterprise_account):
    EnterpriseLimit.objects.create(account=enterprise_account, max_concurrent_builds=40)
    enterprise_account.tier = Tier.PRO  # downgraded: the contract no longer applies
    enterprise_account.save()
    enterprise_account.refresh_from_db()

    assert enterprise_account.effective_limits().max_concurrent == 2


def test_enterprise_limit_validation_names_the_cap(enterprise_account, pro_account):
    too_long = EnterpriseLimit(account=enterprise_account, max_timeout_minutes=31)
    with pytest.raises(ValidationError) as error:
        too_long.full_clean()
    assert error.value.message_dict["max_timeout_minutes"] == [
        "The timeout is capped at the Enterprise tier's maximum of 30 minutes."
    ]

    absurd = EnterpriseLimit(
        account=enterprise_account, max_concurrent_builds=1000, max_bundle_size_mb=0
    )
    with pytest.raises(ValidationError) as error:
        absurd.full_clean()
    assert set(error.value.message_dict) == {"max_concurrent_builds", "max_bundle_size_mb"}

    wrong_tier = EnterpriseLimit(account=pro_account, max_concurrent_builds=3)
    with pytest.raises(ValidationError) as error:
        wrong_tier.full_clean()
    assert "Enterprise accounts only" in error.value.message_dict["account"][0]
