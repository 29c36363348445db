"""Query counts of the engine's hot paths, pinned: a new query here costs every job.

Run outside a test transaction, as a worker runs them: each count includes its BEGIN and
COMMIT (and no savepoints).
"""

import pytest

from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs, worker
from tests.conftest import make_account

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def full_queue(db):
    worker()
    for tier in ("enterprise", "pro", "starter", "free"):
        queue_jobs(make_account(tier, f"{tier} queue"), 5)
    return claim_next_job("test-worker")  # one account now has a job running


def test_claim_on_a_full_queue_takes_seven_queries_and_the_transaction(
    full_queue, django_assert_num_queries
):
    # cursor lock, running counts, their accounts' limits, the candidate (SKIP LOCKED),
    # the conditional UPDATE, the cursor's advance, the claimed job with its account
    with django_assert_num_queries(2 + 7):
        job = claim_next_job("test-worker")

    assert job.status == "running"


def test_finishing_a_job_takes_two_queries_and_the_transaction(
    full_queue, django_assert_num_queries
):
    # the conditional UPDATE naming the lease, then the reload that is announced
    with django_assert_num_queries(2 + 2):
        finished = lifecycle.succeed_job(full_queue.pk, full_queue.lease_token, {"ok": True})

    assert finished.status == "succeeded"


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
