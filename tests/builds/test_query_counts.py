"""Query counts of the engine's hot paths, pinned: a new query here costs every job.

Run outside a test transaction, as a worker runs them: each count includes its BEGIN and
COMMIT (and no savepoints).
"""

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.runner import run_next_job
from builds.models import Job, JobLog
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def full_queue(db):
    worker()
    for tier in ("enterprise", "pro", "starter", "free"):
        queue_jobs(make_account(tier, f"{tier} queue"), 5)
    return claim_next_job("test-worker")  # one account now has a job running


def test_claim_on_a_full_queue_takes_one_call_on_postgresql_and_five_queries_elsewhere(
    full_queue, django_assert_num_queries
):
    # PostgreSQL: the claim function, in one statement of its own. Elsewhere, in a
    # transaction: may a job start and is the worker draining (one query), the cursor locked
    # and advanced (UPDATE ... RETURNING), the accounts at their limit with their running
    # counts, the candidate row with its account and the database's clock, the conditional
    # UPDATE.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2 + 5):
        job = claim_next_job("test-worker")

    assert job.status == "running"
    assert job.worker_id == "test-worker"
    assert job.attempts == 1


def test_finishing_a_job_takes_one_statement_on_postgresql_and_two_queries_elsewhere(
    full_queue, django_assert_num_queries
):
    # PostgreSQL: one statement. Elsewhere, in a transaction: the conditional UPDATE naming
    # the lease, then the reload that is announced.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2 + 2):
        finished = lifecycle.succeed_job(full_queue.pk, full_queue.lease_token, {"ok": True})

    assert finished.status == "succeeded"
    assert finished.result == {"ok": True}
    assert finished.worker_id is None and finished.lease_token is None
    assert Job.objects.get(pk=full_queue.pk).finished_at is not None


def test_the_last_log_lines_cost_the_finish_nothing_more_on_postgresql_and_one_insert_elsewhere(
    full_queue, django_assert_num_queries
):
    lines = [(timezone.now(), "info", "one"), (timezone.now(), "warning", "two")]

    # PostgreSQL: the same one statement. Elsewhere: the UPDATE also makes room in log_seq;
    # the reload; one INSERT of both lines.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2 + 3):
        finished = lifecycle.succeed_job(full_queue.pk, full_queue.lease_token, lines=lines)

    assert finished.log_seq == 2
    stored = JobLog.objects.filter(job=full_queue).order_by("seq")
    assert list(stored.values_list("seq", "level", "message")) == [
        (1, "info", "one"),
        (2, "warning", "two"),
    ]
    assert [entry.ts for entry in stored] == [ts for ts, _, _ in lines]


def test_a_finish_without_the_lease_changes_nothing(full_queue):
    assert lifecycle.succeed_job(full_queue.pk, uuid.uuid4(), {"ok": True}) is None
    assert Job.objects.get(pk=full_queue.pk).status == "running"
    assert not JobLog.objects.filter(job=full_queue).exists()


def test_a_retryable_failure_takes_three_queries_and_the_transaction(
    full_queue, django_assert_num_queries
):
    # attempts read under the lease, the conditional UPDATE back to queued, the reload
    with django_assert_num_queries(2 + 3):
        retried = lifecycle.fail_job(full_queue.pk, full_queue.lease_token, "x", retryable=True)

    assert retried.status == "queued"


def test_progress_takes_two_queries_and_the_transaction(full_queue, django_assert_num_queries):
    # the conditional UPDATE naming the lease, then the row whose state is pushed
    with django_assert_num_queries(2 + 2):
        assert lifecycle.set_progress(full_queue.pk, full_queue.lease_token, 50, "half")

    assert Job.objects.get(pk=full_queue.pk).progress == 50


def test_a_ticket_that_finds_nothing_eligible_takes_one_query(db, django_assert_num_queries):
    queue_jobs(make_account("pro", "Waiting"), 1)
    Job.objects.update(not_before=timezone.now() + dt.timedelta(hours=1))  # in backoff
    assert run_next_job() is None  # the first ticket of a process registers its worker

    # PostgreSQL: the claim function, which finds nothing that could start and only looked.
    # Elsewhere, in a transaction: whether any queued job could start.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2 + 1):
        assert run_next_job() is None
