"""A blocked account's queued jobs stay queued and are claimed only once it is unblocked."""

import pytest

from abuse.choices import FlagStatus
from abuse.models import Flag
from abuse.services import confirm_pattern_and_block, dismiss_flag, unblock_account
from buildhub.errors import ServiceError
from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.submit import AccountBlocked
from builds.models import Job
from tests.abuse.helpers import account, rescore, signal, submit_build
from tests.builds.engine_helpers import worker

pytestmark = pytest.mark.django_db

SHARED_IP = "198.51.100.70"


@pytest.fixture
def flagged_account(settings):
    settings.ABUSE_POINTS_SHARED_IP = 60
    suspect = account("Suspect", created_days_ago=4)
    signal(account("Neighbour", created_days_ago=40), ip=SHARED_IP, minutes_ago=30)
    queued = [submit_build(suspect, ip=SHARED_IP, app_name="Suspect App") for _ in range(2)]
    assert Flag.objects.get(account=suspect).score == 60
    return suspect, queued


def test_queued_jobs_wait_while_blocked_and_run_after_unblock(flagged_account, staff):
    suspect, queued = flagged_account
    worker()
    confirm_pattern_and_block(
        Flag.objects.get(account=suspect), staff, "Looks like a farm.", [("ip", SHARED_IP)]
    )

    assert claim_next_job("test-worker") is None
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.QUEUED}
    with pytest.raises(AccountBlocked):
        submit_build(suspect, ip="192.0.2.10", app_name="Other")

    unblock_account(suspect, staff, "False positive: a co-working space.")

    claimed = claim_next_job("test-worker")
    assert claimed.pk == queued[0].pk
    assert claimed.status == JobStatus.RUNNING


def test_queued_jobs_of_a_blocked_account_can_be_cancelled(flagged_account, staff):
    suspect, queued = flagged_account
    confirm_pattern_and_block(Flag.objects.get(account=suspect), staff, "farm", [("ip", SHARED_IP)])

    lifecycle.cancel_job(queued[0])

    assert Job.objects.get(pk=queued[0].pk).status == JobStatus.CANCELLED


def test_unblocking_an_account_that_is_not_blocked_is_refused(flagged_account, staff):
    suspect, _ = flagged_account
    with pytest.raises(ServiceError, match="not blocked") as refused:
        unblock_account(suspect, staff, "nothing to lift")
    assert refused.value.status == 409


def test_every_action_needs_a_reason(flagged_account, staff):
    suspect, _ = flagged_account
    flag = Flag.objects.get(account=suspect)

    with pytest.raises(ServiceError, match="reason"):
        dismiss_flag(flag, staff, "")
    with pytest.raises(ServiceError, match="reason"):
        confirm_pattern_and_block(flag, staff, " ", [("ip", SHARED_IP)])
    assert Flag.objects.get(pk=flag.pk).status == FlagStatus.OPEN
    suspect.refresh_from_db()
    assert not suspect.blocked
    rescore(suspect)  # still scores as before
    assert Flag.objects.filter(account=suspect).count() == 1
