import datetime as dt

import pytest
from django.db import connection, transaction
from django.utils import timezone

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.fairness import CYCLE
from builds.limits import concurrency_limit
from builds.models import EnterpriseLimit, FairnessCursor, Job
from tests.builds.engine_helpers import queue_jobs, running, worker
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def test_worker(db):
    return worker()


def claim_and_finish():
    job = claim_next_job("test-worker")
    if job is not None:
        lifecycle.succeed_job(job.pk, job.lease_token)
    return job


def test_saturated_service_order_follows_the_cycle_exactly():
    for tier, count in (("enterprise", 80), ("pro", 20), ("starter", 20), ("free", 20)):
        queue_jobs(make_account(tier, f"{tier} saturating"), count)

    served = [str(claim_and_finish().priority_class) for _ in range(100)]

    assert served == [str(cls) for cls in CYCLE] * 10
    assert FairnessCursor.objects.get().position == 100


def test_an_empty_class_yields_its_slot_to_the_highest_waiting_class(pro_account, free_account):
    queue_jobs(pro_account, 10)
    queue_jobs(free_account, 5)

    served = [str(claim_and_finish().priority_class) for _ in range(10)]

    # P0 and P2 have nothing: their slots go to P1; P3 keeps its own slot (the tenth).
    assert served == ["P1"] * 9 + ["P3"]


def test_within_a_class_run_now_first_then_oldest(pro_account, starter_account):
    first, second, third = queue_jobs(starter_account, 3)
    lifecycle.run_job_now(third)

    order = [claim_and_finish().pk for _ in range(3)]

    assert order == [third.pk, first.pk, second.pk]


def test_concurrency_cap_makes_jobs_wait_not_fail(pro_account):
    jobs = queue_jobs(pro_account, 3)

    first, second = claim_next_job("test-worker"), claim_next_job("test-worker")
    third = claim_next_job("test-worker")

    assert first and second and third is None
    assert running(pro_account) == 2
    assert Job.objects.get(pk=jobs[2].pk).status == JobStatus.QUEUED
    lifecycle.succeed_job(first.pk, first.lease_token)
    assert claim_next_job("test-worker").pk == jobs[2].pk


def test_a_capped_account_does_not_block_others_in_its_class(pro_account):
    other_pro = make_account("pro", "Other Pro")
    queue_jobs(pro_account, 4)
    later = queue_jobs(other_pro, 1)[0]

    claimed = [claim_next_job("test-worker") for _ in range(3)]

    assert [job.account_id for job in claimed] == [pro_account.pk, pro_account.pk, other_pro.pk]
    assert claimed[2].pk == later.pk


def test_enterprise_override_raises_the_cap(enterprise_account):
    EnterpriseLimit.objects.create(account=enterprise_account, max_concurrent_builds=7)
    queue_jobs(enterprise_account, 9)

    claimed = [claim_next_job("test-worker") for _ in range(9)]

    assert sum(job is not None for job in claimed) == 7


def test_backoff_and_blocked_accounts_are_not_eligible(pro_account, starter_account):
    waiting = queue_jobs(pro_account, 1)[0]
    Job.objects.filter(pk=waiting.pk).update(not_before=timezone.now() + dt.timedelta(minutes=5))
    blocked_job = queue_jobs(starter_account, 1)[0]
    starter_account.blocked = True
    starter_account.save()

    assert claim_next_job("test-worker") is None
    assert FairnessCursor.objects.get().position == 0  # no claim, no slot spent

    Job.objects.filter(pk=waiting.pk).update(not_before=timezone.now() - dt.timedelta(seconds=1))
    assert claim_next_job("test-worker").pk == waiting.pk
    assert Job.objects.get(pk=blocked_job.pk).status == JobStatus.QUEUED


def test_claim_records_worker_lease_and_attempt(pro_account):
    queued = queue_jobs(pro_account, 1)[0]

    job = claim_next_job("test-worker")

    assert job.pk == queued.pk
    assert job.status == JobStatus.RUNNING
    assert job.worker_id == "test-worker"
    assert job.lease_token is not None
    assert job.lease_expires_at > job.started_at
    assert (job.lease_expires_at - job.started_at).total_seconds() == pytest.approx(30, abs=1)
    assert job.attempts == 1


def test_claim_query_count_is_bounded(pro_account, django_assert_max_num_queries):
    queue_jobs(pro_account, 2)
    queue_jobs(make_account("free", "Free Two"), 2)

    FairnessCursor.objects.get_or_create(pk=1)  # as the migration leaves it
    worker()

    # PostgreSQL: the claim function, in a savepoint inside this test's transaction (a
    # worker claims outside any). Elsewhere: savepoint, may a job start and is the worker
    # draining (one query), cursor lock and advance, accounts at their limit, P0 (empty), P1,
    # claim, release.
    with django_assert_max_num_queries(1 + 2 if connection.vendor == "postgresql" else 8):
        claim_next_job("test-worker")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the claim function's commit")
@pytest.mark.django_db(transaction=True)
def test_an_empty_claim_commits_without_a_disk_sync_and_a_claim_durably(pro_account):
    def synchronous_commit():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    FairnessCursor.objects.get_or_create(pk=1)
    worker()
    limit = concurrency_limit(pro_account)
    queue_jobs(pro_account, limit + 1)
    for _ in range(limit):
        claim_next_job("test-worker")
    position = FairnessCursor.objects.get(pk=1).position
    with transaction.atomic():  # a job waits, but its account is at its limit
        assert claim_next_job("test-worker") is None
        assert synchronous_commit() == "off"  # only the slot went back
    queue_jobs(make_account("pro", "Other Pro"), 1)
    with transaction.atomic():
        assert claim_next_job("test-worker") is not None
        assert synchronous_commit() == "on"
    assert FairnessCursor.objects.get(pk=1).position == position + 1  # the empty one gave it back
