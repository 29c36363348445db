import datetime as dt
import random

import pytest
from django.utils import timezone

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.insight import ACCOUNT_BLOCKED, WORKER_STARTING, describe_job, describe_jobs
from builds.fairness import CLASSES_BY_RANK, claims_until_served, class_for_slot
from builds.models import FairnessCursor, Job
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account


# --- the pure claim-number rule ----------------------------------------------------------
def served_one_by_one(position, waiting, target_class, ahead_in_class):
    """The rule spelled out slot by slot: the reference the fast version must equal."""
    remaining = {cls: waiting.get(cls, 0) for cls in CLASSES_BY_RANK}
    remaining[target_class] = ahead_in_class + 1
    claims = 0
    while True:
        wanted = class_for_slot(position)
        served = wanted if remaining[wanted] else next(c for c in CLASSES_BY_RANK if remaining[c])
        remaining[served] -= 1
        claims += 1
        position += 1
        if served == target_class and remaining[served] == 0:
            return claims


def test_claim_number_equals_the_slot_by_slot_rule():
    rng = random.Random(4)
    for _ in range(2000):
        waiting = {cls: rng.choice([0, 0, 1, 2, 5, 17, 60, 300]) for cls in CLASSES_BY_RANK}
        target = rng.choice(CLASSES_BY_RANK)
        ahead = rng.choice([0, 1, 3, 9, 40, 250])
        position = rng.randrange(0, 1000)

        expected = served_one_by_one(position, waiting, target, ahead)

        assert claims_until_served(position, waiting, target, ahead) == expected, (
            position,
            waiting,
            target,
            ahead,
        )


def test_claim_number_examples():
    # Alone in the queue: the next claim takes it, whatever the slot.
    assert claims_until_served(3, {}, "P3", 0) == 1
    # A P3 job behind busy P0 waits for the tenth slot of the cycle.
    assert claims_until_served(0, {"P0": 100}, "P3", 0) == 10
    # ... and for the second P3 slot when another P3 job is ahead of it.
    assert claims_until_served(0, {"P0": 100}, "P3", 1) == 20
    # The cursor is at the P3 slot: next.
    assert claims_until_served(9, {"P0": 100, "P1": 100}, "P3", 0) == 1
    # Deep queues cost whole-cycle jumps, not a loop per job.
    assert claims_until_served(0, {"P0": 10**9}, "P3", 10**6) == 10 * (10**6 + 1)


# --- queue position against the real claim ------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("cursor", [0, 3, 7])
def test_queue_position_is_the_claim_that_takes_the_job(cursor):
    worker()
    jobs = []
    for tier, count in (("enterprise", 14), ("pro", 5), ("starter", 3), ("free", 4)):
        jobs += queue_jobs(make_account(tier, f"{tier} waiting"), count)
    lifecycle.run_job_now(jobs[-1])  # the last free job jumps to the front of P3
    FairnessCursor.objects.update_or_create(pk=1, defaults={"position": cursor})
    queued = list(Job.objects.select_related("account"))

    predicted = {pk: insight.queue_position for pk, insight in describe_jobs(queued).items()}

    actual = {}
    for number in range(1, len(jobs) + 1):
        job = claim_next_job("test-worker")
        lifecycle.succeed_job(job.pk, job.lease_token)
        actual[job.pk] = number
    assert predicted == actual


@pytest.mark.django_db
def test_insight_of_a_page_costs_the_same_queries_for_few_or_many_jobs(
    django_assert_max_num_queries,
):
    worker()
    few = queue_jobs(make_account("pro", "Few"), 2)
    many = queue_jobs(make_account("starter", "Many"), 40)
    rows = Job.objects.select_related("account", "account__enterprise_limit")
    few = list(rows.filter(pk__in=[job.pk for job in few]))
    many = list(rows.filter(pk__in=[job.pk for job in many]))

    # cursor, running counts, capacity, one aggregate for every job's place and its
    # account's jobs ahead, one duration sample per kind
    with django_assert_max_num_queries(5):
        describe_jobs(few)
    with django_assert_max_num_queries(5):
        insights = describe_jobs(many)
    assert sorted(i.queue_position for i in insights.values()) == list(range(3, 43))


# --- why a job waits -----------------------------------------------------------------------
def reload(job):
    return Job.objects.select_related("account").get(pk=job.pk)


@pytest.mark.django_db
def test_worker_starting_while_no_worker_is_up(pro_account):
    job = queue_jobs(pro_account, 1)[0]

    insight = describe_job(reload(job))

    assert insight.waiting_reason == WORKER_STARTING
    assert insight.queue_position == 1
    assert insight.eta_seconds is None  # no capacity: no estimate


@pytest.mark.django_db
def test_account_at_its_concurrency_limit(pro_account):
    worker(processes=4)
    jobs = queue_jobs(pro_account, 3)
    claim_next_job("test-worker"), claim_next_job("test-worker")

    insight = describe_job(reload(jobs[2]))

    assert insight.waiting_reason == "account at its concurrency limit (2/2 running)"
    assert insight.queue_position == 1  # first once a slot of its account frees up


@pytest.mark.django_db
def test_retry_backoff_until(pro_account):
    worker()
    job = queue_jobs(pro_account, 1)[0]
    until = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=4)
    Job.objects.filter(pk=job.pk).update(not_before=until)

    insight = describe_job(reload(job))

    assert insight.waiting_reason == f"retry backoff until {until.isoformat()}"


@pytest.mark.django_db
def test_blocked_account_wording_reveals_no_signals(starter_account):
    worker()
    job = queue_jobs(starter_account, 1)[0]
    starter_account.blocked = True
    starter_account.blocked_reason = "abuse score 97: crypto-mining signature"
    starter_account.save()

    insight = describe_job(reload(job))

    assert insight.waiting_reason == ACCOUNT_BLOCKED
    assert "abuse" not in insight.waiting_reason and "crypto" not in insight.waiting_reason
    assert insight.queue_position is None


@pytest.mark.django_db
def test_waiting_for_jobs_ahead_and_next_in_line(pro_account, starter_account, free_account):
    worker()
    first = queue_jobs(pro_account, 1)[0]
    second = queue_jobs(starter_account, 1)[0]
    third = queue_jobs(free_account, 1)[0]

    reasons = {
        pk: i.waiting_reason for pk, i in describe_jobs(map(reload, [first, second, third])).items()
    }

    assert reasons[first.pk] == "next in line: a worker is picking it up"
    assert reasons[second.pk] == "waiting for 1 job ahead"
    assert reasons[third.pk] == "waiting for 2 jobs ahead"


@pytest.mark.django_db
def test_next_in_line_waits_for_a_free_worker_slot(pro_account, starter_account):
    worker(processes=1)
    queue_jobs(pro_account, 1)
    claim_next_job("test-worker")
    waiting = queue_jobs(starter_account, 1)[0]

    insight = describe_job(reload(waiting))

    assert insight.waiting_reason == "next in line: waiting for a free worker slot (1/1 busy)"


@pytest.mark.django_db
def test_running_and_finished_jobs_have_no_waiting_reason(pro_account):
    worker()
    queue_jobs(pro_account, 2)
    running = claim_next_job("test-worker")
    lifecycle.succeed_job(running.pk, running.lease_token)
    other = claim_next_job("test-worker")

    for job in (running, other):
        insight = describe_job(reload(job))
        assert insight.waiting_reason is None
        assert insight.queue_position is None


# --- ETA ---------------------------------------------------------------------------------
def finished(account, seconds, kind="diagnostic.sleep", ago=dt.timedelta(minutes=1)):
    end = timezone.now() - ago
    return Job.objects.create(
        kind=kind,
        account=account,
        priority_class="P1",
        status=JobStatus.SUCCEEDED,
        timeout_seconds=300,
        started_at=end - dt.timedelta(seconds=seconds),
        finished_at=end,
    )


@pytest.mark.django_db
def test_eta_from_the_median_of_recent_durations_and_capacity(pro_account):
    for seconds in (10, 20, 30, 40, 1000):
        finished(pro_account, seconds)
    finished(pro_account, 5, kind="other.kind")  # another kind's durations do not count
    worker(processes=1)
    first, second, third = queue_jobs(pro_account, 3)
    # Pro's limit is 2 and none runs: all three are eligible, served one after another.

    etas = {
        pk: i.eta_seconds for pk, i in describe_jobs(map(reload, [first, second, third])).items()
    }

    assert etas == {first.pk: 30, second.pk: 60, third.pk: 90}


@pytest.mark.django_db
def test_eta_counts_running_jobs_and_parallel_slots(pro_account, starter_account):
    for seconds in (30, 30, 30):
        finished(pro_account, seconds)
    worker(processes=2)
    queue_jobs(starter_account, 1)
    claim_next_job("test-worker")  # one slot busy
    jobs = queue_jobs(pro_account, 2)

    etas = [describe_job(reload(job)).eta_seconds for job in jobs]

    # two slots: (1 running + position 1) fit one wave; position 2 waits a wave.
    assert etas == [30, 60]


@pytest.mark.django_db
def test_eta_respects_the_accounts_own_limit(free_account):
    finished(free_account, 30)
    worker(processes=4)  # slots to spare, but a Free account runs one job at a time
    jobs = queue_jobs(free_account, 3)

    etas = [describe_job(reload(job)).eta_seconds for job in jobs]

    assert etas == [30, 60, 90]

    claim_next_job("test-worker")  # the account is at its limit now
    insights = describe_jobs(map(reload, jobs[1:]))

    assert [insights[job.pk].queue_position for job in jobs[1:]] == [1, 2]
    assert [insights[job.pk].eta_seconds for job in jobs[1:]] == [60, 90]


@pytest.mark.django_db
def test_eta_uses_only_the_last_samples(pro_account, settings):
    settings.JOB_ETA_SAMPLE = 3
    for seconds, ago in ((600, 50), (600, 40), (10, 3), (10, 2), (10, 1)):
        finished(pro_account, seconds, ago=dt.timedelta(minutes=ago))
    worker()
    job = queue_jobs(pro_account, 1)[0]

    assert describe_job(reload(job)).eta_seconds == 10


@pytest.mark.django_db
def test_eta_of_a_running_job_is_what_remains_of_the_median(pro_account):
    finished(pro_account, 100)
    worker()
    queue_jobs(pro_account, 1)
    job = claim_next_job("test-worker")
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - dt.timedelta(seconds=40))

    eta = describe_job(reload(job)).eta_seconds

    assert eta in (59, 60)  # 100 - 40, less the moments the test took


@pytest.mark.django_db
def test_eta_is_unknown_without_recorded_durations(pro_account):
    worker()
    job = queue_jobs(pro_account, 1)[0]

    assert describe_job(reload(job)).eta_seconds is None


@pytest.mark.django_db
def test_eta_of_a_job_in_backoff_waits_for_the_backoff(pro_account):
    finished(pro_account, 20)
    worker()
    job = queue_jobs(pro_account, 1)[0]
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() + dt.timedelta(seconds=300))

    eta = describe_job(reload(job)).eta_seconds

    assert 318 <= eta <= 320
