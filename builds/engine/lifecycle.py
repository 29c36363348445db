"""Every state change of a job: one conditional UPDATE naming the state it leaves.

A worker's writes are also conditional on its lease token, so a worker that lost its lease
changes nothing. Listeners hear about a change only after it is committed.
"""

import datetime as dt
import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Now
from django.utils import timezone

from buildhub.errors import ServiceError
from builds import metrics
from builds.choices import RETRYABLE_END_STATES, TERMINAL_STATES, JobStatus, LogLevel
from builds.engine import events
from builds.engine.logs import store_lines, stored_line_messages
from builds.engine.rows import fetch_jobs
from builds.engine.tickets import issue_ticket
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


def _announce(job_id, outcome: str, lines: Sequence[tuple] = ()) -> Job:
    """Reload the job and, on commit, log, push and signal its new state.

    ``lines``: the job's last log lines, counted into ``log_seq`` by the caller's UPDATE;
    they are stored here and pushed before the new state.
    """
    job = Job.objects.select_related("account").get(pk=job_id)
    if lines:
        store_lines(job_id, job.log_seq, lines)
    _notify_on_commit(job, outcome, job.account.slug)
    return job


def _notify_on_commit(
    job: Job, outcome: str, account_slug: str, lines: Sequence[dict] = ()
) -> None:
    """On commit: the outcome's log line, the push of ``lines`` (log events) and the new
    state, and the signals."""

    def notify():
        logger.info(
            "job %s id=%s kind=%s account=%s status=%s attempts=%s/%s",
            outcome,
            job.pk,
            job.kind,
            account_slug,
            job.status,
            job.attempts,
            job.max_attempts,
        )
        metrics.job_changed(job, outcome)
        events.push(job.pk, *lines, events.status_message(job))
        if job.status == JobStatus.SUCCEEDED:
            events.job_completed.send(sender=Job, job=job, outcome=outcome)
        elif job.status in TERMINAL_STATES:
            events.job_failed.send(sender=Job, job=job, outcome=outcome)
        elif outcome == "retrying":
            events.job_error.send(sender=Job, job=job, outcome=outcome)
        if job.status == JobStatus.QUEUED and job.not_before is None:
            issue_ticket()  # a backoff's ticket comes from the reconciler when it is due

    transaction.on_commit(notify)


def _leased(job_id, lease_token):
    return Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, lease_token=lease_token)


def _log_room(lines) -> dict:
    """Part of an UPDATE that writes ``lines`` with the reload (``_announce``): room for them
    in ``log_seq``."""
    return {"log_seq": F("log_seq") + len(lines)} if lines else {}


def _done_by(what: str, by: str) -> list[tuple]:
    """The job's log line saying who asked for a change (``by``: an API token or a staff
    user, as ``builds.services.actor_name`` names them); none when nobody is named."""
    return [(timezone.now(), LogLevel.INFO, f"{what} by {by}.")] if by else []


def _end_lease(job_id, lease_token, lines: Sequence[tuple], **changes) -> int:
    """The lease holder's last UPDATE: the new state, the lease released and room made in
    ``log_seq`` for the job's last log lines (written with the reload, same transaction)."""
    return _leased(job_id, lease_token).update(
        **changes, **_log_room(lines), **_RELEASE_LEASE, **next_state()
    )


# The end of a successful job on PostgreSQL, in one statement: the conditional UPDATE that
# releases the lease, the last log lines numbered after it, and the row that is announced
# with its account's slug (what _end_lease, store_lines and _announce do in three).
_SUCCEED_SQL = """
WITH done AS (
    UPDATE builds_job SET
        status = %s, progress = 100, result = %s, error = '', finished_at = now(),
        worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
        state_seq = state_seq + 1, log_seq = log_seq + %s
    WHERE id = %s AND status = %s AND lease_token = %s
    RETURNING *
), logged AS (
    INSERT INTO builds_joblog (job_id, seq, ts, level, message)
    SELECT done.id, done.log_seq - %s + line.number, line.ts, line.level, line.message
    FROM done,
        unnest(%s::timestamptz[], %s::text[], %s::text[]) WITH ORDINALITY
            AS line(ts, level, message, number)
)
SELECT done.*, account.slug AS account_slug
FROM done JOIN builds_account account ON account.id = done.account_id
"""


def succeed_job(job_id, lease_token, result=None, *, lines: Sequence[tuple] = ()) -> Job | None:
    """``lines``: the job's last log lines, written with the end of the lease (as for every
    end of a lease below). On PostgreSQL in one statement (``_SUCCEED_SQL``)."""
    if connection.vendor != "postgresql":
        return _succeed_with_queries(job_id, lease_token, result, lines=lines)
    result_value = Job._meta.get_field("result").get_db_prep_save(result, connection)
    finished = fetch_jobs(
        _SUCCEED_SQL,
        [
            JobStatus.SUCCEEDED.value,
            result_value,
            len(lines),
            job_id,
            JobStatus.RUNNING.value,
            lease_token,
            len(lines),
            [ts for ts, _, _ in lines],
            [level for _, level, _ in lines],
            [message for _, _, message in lines],
        ],
    )
    if not finished:
        return None
    job = finished[0]
    stored = stored_line_messages(job.pk, job.log_seq, lines)
    account_slug = job.account_slug  # type: ignore[attr-defined]  # the statement's column
    _notify_on_commit(job, "succeeded", account_slug, stored)
    return job


@transaction.atomic
def _succeed_with_queries(job_id, lease_token, result, *, lines: Sequence[tuple]) -> Job | None:
    updated = _end_lease(
        job_id,
        lease_token,
        lines,
        status=JobStatus.SUCCEEDED,
        progress=100,
        result=result,
        error="",
        finished_at=Now(),
    )
    return _announce(job_id, "succeeded", lines) if updated else None


@transaction.atomic
def fail_job(job_id, lease_token, error: str, *, retryable: bool, lines=()) -> Job | None:
    """A failed attempt: back to the queue with backoff while attempts remain, else failed."""
    job = _leased(job_id, lease_token).only("attempts", "max_attempts").first()
    if job is None:
        return None
    if retryable and job.attempts < job.max_attempts:
        delay = backoff_seconds(job.attempts, settings.JOB_RETRY_BASE_SECONDS)
        updated = _end_lease(
            job_id,
            lease_token,
            lines,
            status=JobStatus.QUEUED,
            not_before=after(delay),
            error=error[:10000],
            stage=f"Retrying in {delay:.0f}s (attempt {job.attempts} of {job.max_attempts} failed)",
        )
        return _announce(job_id, "retrying", lines) if updated else None
    updated = _end_lease(
        job_id,
        lease_token,
        lines,
        status=JobStatus.FAILED,
        error=error[:10000],
        finished_at=Now(),
    )
    return _announce(job_id, "failed", lines) if updated else None


@transaction.atomic
def time_out_job(job_id, lease_token, timeout_seconds: int, *, lines=()) -> Job | None:
    updated = _end_lease(
        job_id,
        lease_token,
        lines,
        status=JobStatus.TIMED_OUT,
        finished_at=Now(),
        error=f"timed out after {timeout_seconds // 60} min {timeout_seconds % 60} s",
    )
    return _announce(job_id, "timed_out", lines) if updated else None


@transaction.atomic
def finish_cancelled_job(job_id, lease_token, *, lines=()) -> Job | None:
    updated = _end_lease(
        job_id, lease_token, lines, status=JobStatus.CANCELLED, finished_at=Now(), stage="Cancelled"
    )
    return _announce(job_id, "cancelled", lines) if updated else None


@transaction.atomic
def release_job(job_id, lease_token, *, lines=()) -> Job | None:
    """A stopping worker hands the job back without spending the attempt."""
    updated = _end_lease(
        job_id,
        lease_token,
        lines,
        status=JobStatus.QUEUED,
        attempts=F("attempts") - 1,
        not_before=None,
        stage="Released by a stopping worker; waiting for another",
    )
    return _announce(job_id, "released", lines) if updated else None


def renew_lease(job_id, lease_token) -> bool:
    return bool(
        _leased(job_id, lease_token).update(lease_expires_at=after(settings.JOB_LEASE_SECONDS))
    )


@transaction.atomic
def set_progress(job_id, lease_token, progress: int | None = None, stage: str | None = None):
    changes: dict[str, int | str] = {}
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
def cancel_job(job: Job, *, by: str = "") -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop (≤ 2 s).

    ``by`` (here and in retry and run-now): who asked, written to the job's log."""
    lines = _done_by("Cancelled", by)
    if Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED,
        finished_at=Now(),
        stage="Cancelled before it started",
        **_log_room(lines),
        **next_state(),
    ):
        return _announce(job.pk, "cancelled", lines)
    lines = _done_by("Cancel requested", by)
    if Job.objects.filter(
        pk=job.pk, status=JobStatus.RUNNING, cancel_requested_at__isnull=True
    ).update(cancel_requested_at=Now(), stage="Cancelling", **_log_room(lines), **next_state()):
        return _announce(job.pk, "cancel requested", lines)
    current = Job.objects.get(pk=job.pk)
    if current.status == JobStatus.RUNNING:
        return current  # asked already; the worker is stopping it
    raise ServiceError(
        f"This job has already ended ({current.get_status_display().lower()}).",
        code="conflict",
        status=409,
    )


@transaction.atomic
def retry_job(job: Job, *, by: str = "") -> Job:
    """Queue a failed or timed-out job again as a new attempt."""
    lines = _done_by("Retry requested", by)
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
        **_log_room(lines),
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
    return _announce(job.pk, "retry requested", lines)


@transaction.atomic
def run_job_now(job: Job, *, by: str = "") -> Job:
    """Move a queued job to the front of its class (it still waits for eligibility)."""
    lines = _done_by("Moved to the front of its class", by)
    updated = Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        run_now=True, not_before=None, **_log_room(lines), **next_state()
    )
    if not updated:
        raise ServiceError("Only queued jobs can be run now.", code="conflict", status=409)
    return _announce(job.pk, "run now", lines)


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
