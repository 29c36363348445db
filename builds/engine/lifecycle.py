"""Every state change of a job: one conditional UPDATE naming the state it leaves.

A worker's writes are also conditional on its lease token, so a worker that lost its lease
changes nothing. Listeners hear about a change only after it is committed.
"""

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Now

from buildhub.errors import ServiceError
from builds.choices import RETRYABLE_END_STATES, TERMINAL_STATES, JobStatus
from builds.engine import events
from builds.fairness import backoff_seconds
from builds.models import Job

logger = logging.getLogger("buildhub.jobs")

WORKER_LOST = "worker lost: its lease expired before the job finished"


def after(seconds: float):
    return Now() + Value(dt.timedelta(seconds=seconds))


_RELEASE_LEASE = {"worker": None, "lease_token": None, "lease_expires_at": None}


def next_state():
    """Part of every UPDATE that is announced: live clients drop status events older than
    what they already have by comparing this counter."""
    return {"state_seq": F("state_seq") + 1}


def _announce(job_id, outcome: str) -> Job:
    """Reload the job and, on commit, log, push and signal its new state."""
    job = Job.objects.select_related("account").get(pk=job_id)

    def notify():
        logger.info(
            "job %s id=%s kind=%s account=%s status=%s attempts=%s/%s",
            outcome,
            job.pk,
            job.kind,
            job.account.slug,
            job.status,
            job.attempts,
            job.max_attempts,
        )
        events.push(job.pk, events.status_message(job))
        if job.status == JobStatus.SUCCEEDED:
            events.job_completed.send(sender=Job, job=job, outcome=outcome)
        elif job.status in TERMINAL_STATES:
            events.job_failed.send(sender=Job, job=job, outcome=outcome)
        elif outcome == "retrying":
            events.job_error.send(sender=Job, job=job, outcome=outcome)
        if job.status == JobStatus.QUEUED and job.not_before is None:
            from builds.engine.dispatch import issue_ticket

            issue_ticket()  # a backoff's ticket comes from the reconciler when it is due

    transaction.on_commit(notify)
    return job


def _leased(job_id, lease_token):
    return Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, lease_token=lease_token)


@transaction.atomic
def succeed_job(job_id, lease_token, result=None) -> Job | None:
    updated = _leased(job_id, lease_token).update(
        status=JobStatus.SUCCEEDED,
        progress=100,
        result=result,
        error="",
        finished_at=Now(),
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "succeeded") if updated else None


@transaction.atomic
def fail_job(job_id, lease_token, error: str, *, retryable: bool) -> Job | None:
    """A failed attempt: back to the queue with backoff while attempts remain, else failed."""
    job = _leased(job_id, lease_token).only("attempts", "max_attempts").first()
    if job is None:
        return None
    if retryable and job.attempts < job.max_attempts:
        delay = backoff_seconds(job.attempts, settings.JOB_RETRY_BASE_SECONDS)
        updated = _leased(job_id, lease_token).update(
            status=JobStatus.QUEUED,
            not_before=after(delay),
            error=error[:10000],
            stage=f"Retrying in {delay:.0f}s (attempt {job.attempts} of {job.max_attempts} failed)",
            **_RELEASE_LEASE,
            **next_state(),
        )
        return _announce(job_id, "retrying") if updated else None
    updated = _leased(job_id, lease_token).update(
        status=JobStatus.FAILED,
        error=error[:10000],
        finished_at=Now(),
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "failed") if updated else None


@transaction.atomic
def time_out_job(job_id, lease_token, timeout_seconds: int) -> Job | None:
    updated = _leased(job_id, lease_token).update(
        status=JobStatus.TIMED_OUT,
        finished_at=Now(),
        error=f"timed out after {timeout_seconds // 60} min {timeout_seconds % 60} s",
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "timed_out") if updated else None


@transaction.atomic
def finish_cancelled_job(job_id, lease_token) -> Job | None:
    updated = _leased(job_id, lease_token).update(
        status=JobStatus.CANCELLED,
        finished_at=Now(),
        stage="Cancelled",
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "cancelled") if updated else None


@transaction.atomic
def release_job(job_id, lease_token) -> Job | None:
    """A stopping worker hands the job back without spending the attempt."""
    updated = _leased(job_id, lease_token).update(
        status=JobStatus.QUEUED,
        attempts=F("attempts") - 1,
        not_before=None,
        stage="Released by a stopping worker; waiting for another",
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "released") if updated else None


def renew_lease(job_id, lease_token) -> bool:
    return bool(
        _leased(job_id, lease_token).update(lease_expires_at=after(settings.JOB_LEASE_SECONDS))
    )


@transaction.atomic
def set_progress(job_id, lease_token, progress: int | None = None, stage: str | None = None):
    changes = {}
    if progress is not None:
        changes["progress"] = max(0, min(100, int(progress)))
    if stage is not None:
        changes["stage"] = stage[:200]
    if not changes or not _leased(job_id, lease_token).update(**changes, **next_state()):
        return False
    job = Job.objects.get(pk=job_id)
    events.push_on_commit(job_id, events.status_message(job))
    return True


@transaction.atomic
def cancel_job(job: Job) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop (≤ 2 s)."""
    if Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED,
        finished_at=Now(),
        stage="Cancelled before it started",
        **next_state(),
    ):
        return _announce(job.pk, "cancelled")
    if Job.objects.filter(
        pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True
    ).update(cancel_requested_at=Now(), stage="Cancelling", **next_state()):
        return _announce(job.pk, "cancel requested")
    current = Job.objects.get(pk=job.pk)
    if current.status == JobStatus.RUNNING:
        return current  # asked already; the worker is stopping it
    raise ServiceError(
        f"This job has already ended ({current.get_status_display().lower()}).",
        code="conflict",
        status=409,
    )


@transaction.atomic
def retry_job(job: Job) -> Job:
    """Queue a failed or timed-out job again as a new attempt."""
    updated = Job.objects.filter(pk=job.pk, status__in=RETRYABLE_END_STATES).update(
        status=JobStatus.QUEUED,
        not_before=None,
        finished_at=None,
        started_at=None,
        error="",
        progress=0,
        stage="Queued again by request",
        cancel_requested_at=None,
        max_attempts=F("attempts") + 1,
        result=None,
        **next_state(),
    )
    if not updated:
        current = Job.objects.get(pk=job.pk)
        raise ServiceError(
            f"Only failed or timed-out jobs can be retried; this one is "
            f"{current.get_status_display().lower()}.",
            code="conflict",
            status=409,
        )
    return _announce(job.pk, "retry requested")


@transaction.atomic
def run_job_now(job: Job) -> Job:
    """Move a queued job to the front of its class (it still waits for eligibility)."""
    updated = Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        run_now=True, not_before=None, **next_state()
    )
    if not updated:
        raise ServiceError("Only queued jobs can be run now.", code="conflict", status=409)
    return _announce(job.pk, "run now")


@transaction.atomic
def reap_expired_lease(job_id, lease_token) -> Job | None:
    """A worker vanished: retry with backoff while attempts remain, else fail it."""
    rows = Job.objects.filter(
        pk=job_id, status=JobStatus.RUNNING, lease_token=lease_token, lease_expires_at__lt=Now()
    )
    job = rows.only("attempts", "max_attempts").first()
    if job is None:
        return None
    if job.attempts < job.max_attempts:
        delay = backoff_seconds(job.attempts, settings.JOB_RETRY_BASE_SECONDS)
        updated = rows.update(
            status=JobStatus.QUEUED,
            not_before=after(delay),
            error=WORKER_LOST,
            stage=f"Worker lost; retrying in {delay:.0f}s",
            **_RELEASE_LEASE,
            **next_state(),
        )
        return _announce(job_id, "retrying") if updated else None
    updated = rows.update(
        status=JobStatus.FAILED,
        error=WORKER_LOST,
        finished_at=Now(),
        **_RELEASE_LEASE,
        **next_state(),
    )
    return _announce(job_id, "failed") if updated else None
