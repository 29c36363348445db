"""The runner in this process: real child processes, real lease monitor, real database."""

import datetime as dt
import shutil
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from buildhub.errors import ServiceError
from builds import registry
from builds.choices import JobStatus
from builds.engine import events, lifecycle
from builds.engine.claim import claim_next_job, take_next_job
from builds.engine.exceptions import WorkerDraining
from builds.engine.runner import current_worker_id, ensure_registered, execute_claimed, run_next_job
from builds.engine.tickets import tickets_waiting
from builds.engine.workers import reap_expired_leases
from builds.engine.workspaces import (
    WORKSPACE_PREFIX,
    installation_key,
    sweep_workspaces,
    workspace_root,
)
from builds.models import FairnessCursor, Job, Worker
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account
from tests.support.runner import grandchild_pid, logs_of, pid_alive, reload, run_in_thread, run_one

pytestmark = pytest.mark.django_db(transaction=True)


def secret_executor(context):
    context.add_secret("hunter2-very-secret")
    context.run(
        [
            "sh",
            "-c",
            "echo using hunter2-very-secret now; "
            "echo 'Authorization: Bearer abc.def.ghi'; "
            "echo token bh_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAA; "
            "echo API_TOKEN=s3cr3tvalue",
        ]
    )


registry.register_kind("test.secret", secret_executor)


def drain_own_worker_executor(context):
    """Marks the worker running it as draining (as SIGTERM to its cluster does)."""
    Worker.objects.filter(pk=context.job.worker_id).update(state="draining")
    return {"ok": True}


registry.register_kind("test.drain-own-worker", drain_own_worker_executor)


@pytest.fixture
def account(db):
    worker("ghost")  # a worker that claims jobs in tests and never runs them
    return make_account("enterprise", "Runner Co")


def wait_for_status(job, status, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reload(job).status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"job never reached {status}; it is {reload(job).status}")


def test_success_reports_progress_logs_and_removes_the_workspace(account):
    job = queue_jobs(account, 1, params={"seconds": 0.3, "steps": 3})[0]
    completed = []
    events.job_completed.connect(lambda sender, job, **kw: completed.append(job.pk), weak=False)

    assert run_one() == str(job.pk)

    job = reload(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.progress == 100
    assert job.result == {"slept_seconds": 0.3, "steps": 3}
    assert job.finished_at >= job.started_at
    assert job.lease_token is None and job.worker_id is None
    lines = logs_of(job)
    assert [seq for seq, _ in lines] == list(range(1, len(lines) + 1))
    assert [m for _, m in lines if m.startswith("step")] == ["step 1/3", "step 2/3", "step 3/3"]
    assert job.log_seq == len(lines)
    assert completed == [job.pk]
    assert not list(workspace_root().glob(f"{WORKSPACE_PREFIX}{job.pk}-*"))


def test_retryable_failure_backs_off_then_succeeds(account):
    job = queue_jobs(account, 1, params={"seconds": 0, "fail_times": 1})[0]
    errors = []
    events.job_error.connect(lambda sender, job, **kw: errors.append(job.pk), weak=False)

    run_one()

    job = reload(job)
    assert job.status == JobStatus.QUEUED
    assert job.attempts == 1
    assert job.error == "diagnostic failure 1 of 1"
    backoff = (job.not_before - timezone.now()).total_seconds()
    assert 20 < backoff <= 36  # 30 s base, up to 20% jitter
    assert errors == [job.pk]
    assert run_one() is None  # still backing off

    Job.objects.filter(pk=job.pk).update(not_before=timezone.now())
    run_one()

    job = reload(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 2


def test_attempts_run_out(account):
    job = queue_jobs(account, 1, params={"seconds": 0, "fail_times": 5}, max_attempts=2)[0]
    failed = []
    events.job_failed.connect(lambda sender, job, **kw: failed.append(job.pk), weak=False)

    run_one()
    Job.objects.filter(pk=job.pk).update(not_before=None)
    run_one()

    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2
    assert job.error == "diagnostic failure 2 of 5"
    assert failed == [job.pk]


def test_non_retryable_failure_fails_at_once(account):
    job = queue_jobs(account, 1, params={"seconds": 0, "exit": 3})[0]

    run_one()

    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1
    assert "exited with code 3" in job.error
    assert logs_of(job)[-1][1] == job.error


def test_bad_params_fail_with_a_clear_error(account):
    job = queue_jobs(account, 1, params={"seconds": "lots"})[0]

    run_one()

    assert reload(job).error == "param 'seconds' must be a number from 0 to 3600"


def test_timeout_kills_the_whole_process_tree(account):
    job = queue_jobs(account, 1, kind="test.tree")[0]
    Job.objects.filter(pk=job.pk).update(timeout_seconds=2)
    thread = run_in_thread()

    grandchild = grandchild_pid(job)
    thread.join(timeout=30)

    job = reload(job)
    assert job.status == JobStatus.TIMED_OUT
    assert job.error == "timed out after 0 min 2 s"
    assert job.attempts == 1
    assert not pid_alive(grandchild)


def test_cancelling_a_running_job_stops_it(account):
    job = queue_jobs(account, 1, kind="test.tree")[0]
    thread = run_in_thread()
    grandchild = grandchild_pid(job)

    lifecycle.cancel_job(reload(job))
    thread.join(timeout=30)

    job = reload(job)
    assert job.status == JobStatus.CANCELLED
    assert job.cancel_requested_at is not None
    assert job.finished_at - job.cancel_requested_at < dt.timedelta(seconds=2)
    assert not pid_alive(grandchild)


def test_cancelling_queued_and_ended_jobs(account):
    queued, ended = queue_jobs(account, 2, params={"seconds": 0})
    Job.objects.filter(pk=ended.pk).update(status=JobStatus.SUCCEEDED)

    assert lifecycle.cancel_job(queued).status == JobStatus.CANCELLED
    with pytest.raises(ServiceError) as refused:
        lifecycle.cancel_job(ended)
    assert refused.value.status == 409


def test_retry_queues_a_failed_job_as_a_new_attempt(account):
    job = queue_jobs(account, 1, params={"seconds": 0, "exit": 1}, max_attempts=1)[0]
    run_one()
    assert reload(job).status == JobStatus.FAILED

    retried = lifecycle.retry_job(reload(job))

    assert retried.status == JobStatus.QUEUED
    assert retried.error == ""
    assert retried.max_attempts == 2
    Job.objects.filter(pk=job.pk).update(params={"seconds": 0})
    run_one()
    assert reload(job).status == JobStatus.SUCCEEDED
    with pytest.raises(ServiceError) as refused:
        lifecycle.retry_job(reload(job))
    assert refused.value.status == 409


def test_a_worker_that_lost_its_lease_stops_and_writes_nothing(account):
    job = queue_jobs(account, 1, kind="test.tree")[0]
    thread = run_in_thread()
    grandchild = grandchild_pid(job)
    lines_before = reload(job).log_seq

    # Someone else now owns the job (as after a reaper requeued it and another worker took it).
    Job.objects.filter(pk=job.pk).update(lease_token="00000000-0000-0000-0000-000000000001")
    thread.join(timeout=30)

    job = reload(job)
    assert job.status == JobStatus.RUNNING  # untouched by the old worker
    assert str(job.lease_token) == "00000000-0000-0000-0000-000000000001"
    assert job.log_seq <= lines_before + 1
    assert not pid_alive(grandchild)


def test_a_draining_worker_releases_its_job_without_spending_the_attempt(account):
    job = queue_jobs(account, 1, kind="test.tree")[0]
    thread = run_in_thread()
    grandchild_pid(job)
    worker_id = reload(job).worker_id

    Worker.objects.filter(pk=worker_id).update(drain_deadline=timezone.now())
    thread.join(timeout=30)

    job = reload(job)
    assert job.status == JobStatus.QUEUED
    assert job.attempts == 0
    assert job.worker_id is None
    assert "Released" in job.stage


def test_reaper_requeues_then_fails_jobs_of_lost_workers(account):
    job = queue_jobs(account, 1, max_attempts=2)[0]
    past = timezone.now() - dt.timedelta(seconds=1)

    claim_next_job("ghost")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_leases() == 1
    job = reload(job)
    assert job.status == JobStatus.QUEUED
    assert job.error.startswith("worker lost")
    assert job.not_before > timezone.now()

    Job.objects.filter(pk=job.pk).update(not_before=None)
    claim_next_job("ghost")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_leases() == 1
    job = reload(job)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2
    assert reap_expired_leases() == 0


def test_secrets_are_redacted_before_storage(account):
    job = queue_jobs(account, 1, kind="test.secret")[0]

    run_one()

    stored = "\n".join(message for _, message in logs_of(job))
    assert reload(job).status == JobStatus.SUCCEEDED
    assert "hunter2-very-secret" not in stored
    assert "abc.def.ghi" not in stored
    assert "bh_0123456789ab_AAAA" not in stored
    assert "s3cr3tvalue" not in stored
    assert "using [REDACTED] now" in stored
    assert "API_TOKEN=[REDACTED]" in stored


def test_sweep_removes_workspaces_of_jobs_that_are_not_running(account):
    claimed_first, queued = queue_jobs(account, 2)
    claimed = claim_next_job("ghost")
    assert claimed.pk == claimed_first.pk
    root = workspace_root()
    left = Path(root, f"{WORKSPACE_PREFIX}{queued.pk}-killed")
    live = Path(root, f"{WORKSPACE_PREFIX}{claimed.pk}-live")
    left.mkdir()
    live.mkdir()

    try:
        sweep_workspaces()
        assert not left.exists()
        assert live.exists()
    finally:
        live.rmdir()


def test_unknown_kind_on_this_worker_fails_the_job(account):
    job = queue_jobs(account, 1)[0]
    Job.objects.filter(pk=job.pk).update(kind="gone.kind")
    claimed = claim_next_job("ghost")

    execute_claimed(claimed)

    assert "no executor" in reload(job).error


def test_workspaces_of_another_installation_are_left_alone(settings):
    """Two BuildHubs on one host (or two test runs) each sweep only their own workspaces."""
    settings.JOB_WORKSPACE_ROOT = ""
    ours = workspace_root()
    assert ours.name == f"buildhub-{installation_key()}"
    foreign = ours.parent / "buildhub-000000000000" / f"{WORKSPACE_PREFIX}{uuid.uuid4()}-x"
    foreign.mkdir(parents=True)
    try:
        sweep_workspaces()
        assert foreign.is_dir()
    finally:
        shutil.rmtree(foreign.parent)


def test_a_claim_that_finds_nothing_that_could_start_takes_no_slot_and_writes_nothing(account):
    worker_id = current_worker_id()
    ensure_registered(worker_id)
    cursor = FairnessCursor.objects.get_or_create(pk=1)[0]  # a flush removes the first one
    job = queue_jobs(account, 1, kind="diagnostic.noop", params={})[0]

    def unclaimed():
        assert claim_next_job(worker_id) is None
        assert FairnessCursor.objects.get(pk=1).position == cursor.position
        return reload(job).status

    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() + dt.timedelta(hours=1))
    assert unclaimed() == JobStatus.QUEUED  # backing off
    Job.objects.filter(pk=job.pk).update(not_before=None)
    account.blocked = True
    account.save(update_fields=["blocked"])
    assert unclaimed() == JobStatus.QUEUED  # its account is blocked
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)
    account.blocked = False
    account.save(update_fields=["blocked"])
    assert unclaimed() == JobStatus.CANCELLED  # nothing queued

    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
    assert claim_next_job(worker_id).pk == job.pk  # and once it could start, it is taken
    assert FairnessCursor.objects.get(pk=1).position == cursor.position + 1


def test_a_draining_worker_is_refused_and_told_apart_from_an_empty_queue(account):
    worker_id = current_worker_id()
    ensure_registered(worker_id)
    Worker.objects.filter(pk=worker_id).update(state="draining")

    assert take_next_job(worker_id) is None  # nothing queued: nothing to hand on
    job = queue_jobs(account, 1, kind="diagnostic.noop", params={})[0]
    with pytest.raises(WorkerDraining):
        take_next_job(worker_id)  # a job waits: another worker must take it
    assert claim_next_job(worker_id) is None
    assert reload(job).status == JobStatus.QUEUED


def test_a_ticket_registers_a_worker_whose_row_is_gone(account):
    worker_id = current_worker_id()
    ensure_registered(worker_id)
    Worker.objects.filter(pk=worker_id).delete()  # removed by hand; this process remembers it
    job = queue_jobs(account, 1, kind="diagnostic.noop", params={})[0]

    assert run_next_job() == str(job.pk)

    assert reload(job).status == JobStatus.SUCCEEDED
    assert Worker.objects.filter(pk=worker_id).exists()


def test_a_ticket_runs_jobs_one_after_another_until_none_is_eligible(account):
    jobs = queue_jobs(account, 3, kind="diagnostic.noop", params={})
    blocked = make_account("pro", "Blocked Co")
    later = queue_jobs(blocked, 1, kind="diagnostic.noop", params={})[0]
    blocked.blocked = True
    blocked.save(update_fields=["blocked"])
    tickets = tickets_waiting()

    assert run_next_job(drain_seconds=60) == str(jobs[0].pk)

    assert [reload(job).status for job in jobs] == [JobStatus.SUCCEEDED] * 3
    assert reload(later).status == JobStatus.QUEUED  # not eligible: the loop stopped
    assert [reload(job).attempts for job in jobs] == [1, 1, 1]
    assert tickets_waiting() == tickets  # the loop itself took each freed slot


def test_a_ticket_stops_claiming_once_its_worker_drains_and_hands_on_a_ticket(account):
    first = queue_jobs(account, 1, kind="test.drain-own-worker", params={})[0]
    rest = queue_jobs(account, 2, kind="diagnostic.noop", params={})
    tickets = tickets_waiting()

    assert run_next_job(drain_seconds=60) == str(first.pk)

    assert reload(first).status == JobStatus.SUCCEEDED
    assert [reload(job).status for job in rest] == [JobStatus.QUEUED] * 2
    assert tickets_waiting() == tickets + 1  # for a worker that is not stopping
    assert claim_next_job(current_worker_id()) is None  # however many are queued


def test_a_ticket_whose_time_is_up_sends_one_on(account):
    first, second = queue_jobs(account, 2, kind="diagnostic.noop", params={})
    tickets = tickets_waiting()

    assert run_next_job(drain_seconds=0) == str(first.pk)

    assert reload(first).status == JobStatus.SUCCEEDED
    assert reload(second).status == JobStatus.QUEUED
    assert tickets_waiting() == tickets + 1  # for whichever process is free


def test_the_last_log_lines_are_written_with_the_end_of_the_job(account):
    job = queue_jobs(account, 1, kind="diagnostic.noop", params={})[0]

    run_next_job()

    job = reload(job)
    assert job.status == JobStatus.SUCCEEDED
    lines = logs_of(job)
    assert [seq for seq, _ in lines] == [1] and lines[0][1].startswith("attempt 1 of 3")
    assert job.log_seq == 1
