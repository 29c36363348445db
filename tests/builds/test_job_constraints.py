"""The database keeps the engine's lease invariants, whoever writes the row: a running job
is held by a worker under a lease, any other job by nobody."""

import datetime as dt
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from builds.choices import JobStatus, WorkerState
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.models import Job, Worker
from tests.builds.engine_helpers import queue_jobs

BEFORE = ("builds", "0010_job_retention")
AFTER = ("builds", "0012_job_lease_constraints")


def a_worker(worker_id="host:1:1") -> Worker:
    return Worker.objects.create(pk=worker_id, host="host", pid=1, state=WorkerState.BUSY)


def held(worker: Worker) -> dict:
    return {
        "worker": worker,
        "lease_token": uuid.uuid4(),
        "lease_expires_at": timezone.now() + dt.timedelta(seconds=30),
    }


def refused(job: Job, **changes) -> bool:
    try:
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(**changes)
    except IntegrityError:
        return True
    return False


@pytest.mark.django_db
@pytest.mark.parametrize("missing", ["worker", "lease_token", "lease_expires_at"])
def test_a_running_job_without_its_worker_or_lease_is_refused(pro_account, missing):
    job = queue_jobs(pro_account, 1)[0]
    lease = held(a_worker())

    assert refused(job, status=JobStatus.RUNNING, **{**lease, missing: None})
    assert not refused(job, status=JobStatus.RUNNING, **lease)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status",
    [
        JobStatus.QUEUED,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
    ],
)
@pytest.mark.parametrize("kept", ["worker", "lease_token", "lease_expires_at"])
def test_a_job_that_is_not_running_holds_no_worker_or_lease(pro_account, status, kept):
    job = queue_jobs(pro_account, 1)[0]
    lease = held(a_worker())

    assert refused(job, status=status, **{kept: lease[kept]})
    assert not refused(job, status=status)


@pytest.mark.django_db
def test_the_engines_own_changes_keep_them(pro_account):
    worker = a_worker()
    job = queue_jobs(pro_account, 1, kind="diagnostic.noop", params={})[0]

    claimed = claim_next_job(worker.pk)
    assert claimed.pk == job.pk and claimed.worker_id == worker.pk

    finished = lifecycle.succeed_job(job.pk, claimed.lease_token, {"ok": True})
    assert finished.status == JobStatus.SUCCEEDED
    assert (finished.worker_id, finished.lease_token, finished.lease_expires_at) == (None,) * 3


@pytest.mark.django_db
def test_a_worker_row_is_not_deleted_under_a_running_job(pro_account):
    worker = a_worker()
    job = queue_jobs(pro_account, 1, kind="diagnostic.noop", params={})[0]
    claim_next_job(worker.pk)

    with pytest.raises(IntegrityError), transaction.atomic():
        worker.delete()  # SET_NULL would leave the running job without its worker
    assert Job.objects.get(pk=job.pk).worker_id == worker.pk


@pytest.mark.django_db(transaction=True)
def test_the_migration_settles_rows_that_break_them_before_adding_the_constraints(pro_account):
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    try:
        old_apps = executor.loader.project_state([BEFORE]).apps
        old_job = old_apps.get_model("builds", "Job")
        gone = old_apps.get_model("builds", "Worker").objects.create(
            pk="gone:1:1", host="gone", pid=1
        )
        lease = {"lease_token": uuid.uuid4(), "lease_expires_at": timezone.now()}

        def old_row(status, **fields):
            return old_job.objects.create(
                kind="diagnostic.noop",
                account_id=pro_account.pk,
                priority_class="P1",
                timeout_seconds=60,
                status=status,
                **fields,
            ).pk

        retried = old_row("running", attempts=1, **lease)  # its worker row was deleted
        spent = old_row("running", attempts=3, max_attempts=3, worker=gone)  # no lease
        finished = old_row("succeeded", worker=gone, **lease)
        held = old_row("running", attempts=1, worker=gone, **lease)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    jobs = Job.objects.in_bulk([retried, spent, finished, held])
    assert jobs[retried].status == JobStatus.QUEUED  # attempts left: as the reaper would
    assert jobs[retried].error.startswith("worker lost")
    assert jobs[spent].status == JobStatus.FAILED and jobs[spent].finished_at is not None
    assert jobs[finished].status == JobStatus.SUCCEEDED
    for pk in (retried, spent, finished):
        assert (jobs[pk].worker_id, jobs[pk].lease_token, jobs[pk].lease_expires_at) == (None,) * 3
    assert jobs[held].status == JobStatus.RUNNING and jobs[held].worker_id == "gone:1:1"
    assert AFTER in MigrationExecutor(connection).loader.applied_migrations
