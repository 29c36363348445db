"""The worker registry, drain, heat-up and the periodic sweeps the supervisor runs."""

import datetime as dt
import logging

from django.conf import settings
from django.db.models import Max, Q
from django.db.models.functions import Now
from django.utils import timezone

from buildhub.errors import ServiceError
from builds import metrics
from builds.choices import LIVE_WORKER_STATES, JobStatus, WorkerState
from builds.engine import lifecycle
from builds.engine.lifecycle import after
from builds.engine.tickets import issue_ticket, tickets_ahead, tickets_waiting
from builds.models import HeatUp, Job, Worker

logger = logging.getLogger("buildhub.workers")

MAX_HEATUP_WORKERS = 50
MAX_HEATUP_DURATION = dt.timedelta(hours=24)


def register_worker(
    worker_id: str, host: str, pid: int, processes: int, sandbox_mode: str = ""
) -> Worker:
    worker, _ = Worker.objects.update_or_create(
        pk=worker_id,
        defaults={
            "host": host,
            "pid": pid,
            "processes": processes,
            "sandbox": sandbox_mode[:300],
            "state": WorkerState.STARTING,
            "last_seen": Now(),
            "drain_deadline": None,
            "stopped_at": None,
        },
    )
    return worker


def running_jobs_of(worker_id: str) -> int:
    return Job.objects.filter(worker_id=worker_id, status=JobStatus.RUNNING).count()


def touch_worker(worker_id: str) -> bool:
    """Heartbeat of a live cluster: last_seen now, idle or busy from its running jobs.

    False when the worker has no row any more (deleted by hand): the caller registers again.
    """
    state = WorkerState.BUSY if running_jobs_of(worker_id) else WorkerState.IDLE
    live = Worker.objects.filter(pk=worker_id, state__in=LIVE_WORKER_STATES).update(
        last_seen=Now(), state=state
    )
    if live:
        return True
    return (
        Worker.objects.filter(pk=worker_id)
        .exclude(state=WorkerState.STOPPED)
        .update(last_seen=Now())
        > 0
    )


def begin_drain(worker_id: str, grace_seconds: float) -> None:
    """Stop claiming; running jobs get ``grace_seconds`` to finish, then release themselves."""
    Worker.objects.filter(pk=worker_id).exclude(state=WorkerState.STOPPED).update(
        state=WorkerState.DRAINING, drain_deadline=after(grace_seconds), last_seen=Now()
    )


def mark_stopped(worker_id: str) -> None:
    Worker.objects.filter(pk=worker_id).update(
        state=WorkerState.STOPPED, stopped_at=Now(), last_seen=Now()
    )


def live_workers():
    fresh_since = timezone.now() - dt.timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return Worker.objects.filter(state__in=LIVE_WORKER_STATES, last_seen__gte=fresh_since)


def worker_capacity() -> int:
    """Job slots of the live workers (each cluster runs ``processes`` jobs at once)."""
    return sum(live_workers().values_list("processes", flat=True))


# --- heat-up -----------------------------------------------------------------------------
def heat_up(workers: int, duration: dt.timedelta, *, by: str = "") -> HeatUp:
    """Keep at least ``workers`` clusters warm for ``duration`` (ahead of a known peak)."""
    if not 1 <= workers <= MAX_HEATUP_WORKERS:
        raise ServiceError(
            f"Heat-up takes 1 to {MAX_HEATUP_WORKERS} workers.", fields={"workers": "out of range"}
        )
    if not dt.timedelta(minutes=1) <= duration <= MAX_HEATUP_DURATION:
        raise ServiceError(
            "Heat-up lasts from 1 minute to 24 hours.", fields={"duration": "out of range"}
        )
    return HeatUp.objects.create(workers=workers, until=timezone.now() + duration, created_by=by)


def cool_down() -> int:
    """End every active heat-up now; returns how many ended."""
    return active_heat_ups().update(cancelled_at=Now())


def active_heat_ups():
    return HeatUp.objects.filter(cancelled_at__isnull=True, until__gt=Now())


def heat_floor() -> int:
    return active_heat_ups().aggregate(floor=Max("workers"))["floor"] or 0


# --- sweeps ------------------------------------------------------------------------------
def reap_expired_leases() -> int:
    """Jobs whose worker stopped renewing: retried (attempts left) or failed."""
    expired = Job.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=Now()).values_list(
        "pk", "lease_token"
    )
    reaped = 0
    for job_id, lease_token in expired:
        job = lifecycle.reap_expired_lease(job_id, lease_token)
        if job is not None:
            logger.warning("job %s lost its worker; requeued or failed", job_id)
            metrics.lease_reaped("failed" if job.status == JobStatus.FAILED else "retrying")
            reaped += 1
    return reaped


def eligible_queued_count() -> int:
    return (
        Job.objects.filter(status=JobStatus.QUEUED, account__blocked=False)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=Now()))
        .count()
    )


def reconcile_tickets(capacity: int | None = None) -> int:
    """Make sure the jobs that could run now have tickets waiting: one per job, up to one per
    worker process (``capacity``, by default the live workers' processes); returns tickets
    sent. This is what lets a Redis outage delay jobs without losing any."""
    if capacity is None:
        capacity = max(worker_capacity(), tickets_ahead())
    wanted = min(eligible_queued_count(), capacity)
    try:
        waiting = tickets_waiting()
    except Exception:  # noqa: BLE001
        logger.warning("broker unreachable; cannot reconcile tickets now")
        return 0
    missing = wanted - waiting
    return issue_ticket(missing) if missing > 0 else 0


def queue_is_active() -> bool:
    return Job.objects.filter(Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING)).exists()
