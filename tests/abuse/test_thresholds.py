"""Exact boundaries: 50 does not flag, 51 does; 80 does not block, 81 can (with a pattern)."""

import pytest

from abuse.choices import FlagPriority, FlagStatus, PatternKind, ReviewActionKind
from abuse.models import ConfirmedPattern, Flag, ReviewAction
from abuse.services import dismiss_flag
from tests.abuse.helpers import account, rescore, signal

pytestmark = pytest.mark.django_db

SHARED = "198.51.100.99"


@pytest.fixture
def pair():
    """Two accounts linked by one IP only (created on different days, unlike names)."""
    mine = account("Mine", created_days_ago=3)
    other = account("Other", created_days_ago=50)
    signal(mine, ip=SHARED, app_name="Alpha")
    signal(other, ip=SHARED, app_name="Omega", minutes_ago=90)
    return mine, other


def score_with(settings, mine, points):
    settings.ABUSE_POINTS_SHARED_IP = points
    result = rescore(mine)
    assert result.total == points
    mine.refresh_from_db()
    return result


def confirm_ip(staff=None):
    return ConfirmedPattern.objects.create(
        kind=PatternKind.IP, value=SHARED, confirmed_by=staff, reason="farm"
    )


def test_fifty_does_not_flag_fifty_one_does(settings, pair):
    mine, _ = pair
    score_with(settings, mine, 50)
    assert not Flag.objects.exists()

    score_with(settings, mine, 51)
    flag = Flag.objects.get()
    assert (flag.account, flag.status, flag.priority, flag.score) == (
        mine,
        FlagStatus.OPEN,
        FlagPriority.NORMAL,
        51,
    )


def test_eighty_with_a_confirmed_pattern_is_flagged_not_blocked(settings, pair, staff):
    mine, _ = pair
    confirm_ip(staff)

    score_with(settings, mine, 80)

    assert not mine.blocked
    assert Flag.objects.get().priority == FlagPriority.NORMAL


def test_eighty_one_with_a_confirmed_pattern_blocks(settings, pair, staff):
    mine, _ = pair
    pattern = confirm_ip(staff)

    score_with(settings, mine, 81)

    assert mine.blocked
    assert mine.blocked_reason.startswith("Abuse: Score 81 is above 80")
    flag = Flag.objects.get()
    assert (flag.status, flag.priority) == (FlagStatus.BLOCKED, FlagPriority.HIGH)
    action = ReviewAction.objects.get()
    assert (action.action, action.actor, action.actor_name, action.score) == (
        ReviewActionKind.AUTO_BLOCK,
        None,
        "system",
        81,
    )
    assert list(action.patterns.all()) == [pattern]


def test_eighty_one_without_a_confirmed_pattern_is_flagged_high(settings, pair):
    mine, _ = pair
    ConfirmedPattern.objects.create(kind=PatternKind.IP, value="192.0.2.1", reason="elsewhere")

    score_with(settings, mine, 81)

    assert not mine.blocked
    flag = Flag.objects.get()
    assert (flag.status, flag.priority) == (FlagStatus.OPEN, FlagPriority.HIGH)


def test_one_open_flag_per_account_refreshed_by_rescoring(settings, pair):
    mine, _ = pair
    score_with(settings, mine, 60)
    score_with(settings, mine, 85)

    flag = Flag.objects.get()
    assert (flag.score, flag.priority) == (85, FlagPriority.HIGH)


def test_after_a_dismissal_only_a_higher_score_flags_again(settings, pair, staff):
    mine, _ = pair
    score_with(settings, mine, 60)
    dismiss_flag(Flag.objects.get(), staff, "A school lab behind one address.")

    score_with(settings, mine, 60)
    assert Flag.objects.filter(status=FlagStatus.OPEN).count() == 0

    score_with(settings, mine, 61)
    assert Flag.objects.get(status=FlagStatus.OPEN).score == 61
    assert Flag.objects.count() == 2


def test_a_pattern_confirmed_before_a_dismissal_does_not_block(settings, pair, staff):
    mine, _ = pair
    confirm_ip(staff)
    score_with(settings, mine, 60)
    dismiss_flag(Flag.objects.get(), staff, "Known customer, shared office.")

    score_with(settings, mine, 90)

    assert not mine.blocked
    assert Flag.objects.get(status=FlagStatus.OPEN).priority == FlagPriority.HIGH
