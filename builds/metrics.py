"""The job engine's metrics: what it counts as jobs move, and the queue read at scrape time."""

import datetime as dt

from django.conf import settings
from django.db.models import Count, Min, Q
from django.db.models.functions import Now
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from buildhub import metrics
from builds.choices import (
    LIVE_WORKER_STATES,
    TERMINAL_STATES,
    JobStatus,
    PriorityClass,
    WorkerState,
)
from builds.models import Job, Worker
from builds.tiers import TIERS

TIER_OF_CLASS = {spec.priority_class.value: spec.tier.value for spec in TIERS.values()}


def _tier(job) -> str:
    return TIER_OF_CLASS.get(job.priority_class, "unknown")


def job_submitted(job) -> None:
    metrics.JOBS_SUBMITTED.labels(job.kind, _tier(job)).inc()


def job_claimed(job) -> None:
    tier = _tier(job)
    metrics.JOBS_CLAIMED.labels(job.kind, tier).inc()
    if job.attempts == 1 and job.started_at and job.created_at:
        waited = (job.started_at - job.created_at).total_seconds()
        metrics.JOB_QUEUE_WAIT.labels(job.kind, tier).observe(max(0.0, waited))


def claim_found_nothing(reason: str) -> None:
    metrics.CLAIMS_EMPTY.labels(reason).inc()


def job_changed(job, outcome: str) -> None:
    """After a committed state change (``outcome`` as the engine logs it)."""
    if job.status in TERMINAL_STATES:
        metrics.JOBS_FINISHED.labels(job.kind, _tier(job), job.status).inc()
        if job.started_at and job.finished_at:
            ran = (job.finished_at - job.started_at).total_seconds()
            metrics.JOB_RUN.labels(job.kind, job.status).observe(max(0.0, ran))
    elif outcome == "retrying":
        cause = "worker_lost" if job.error.startswith("worker lost") else "failure"
        metrics.JOB_RETRIES.labels(job.kind, cause).inc()
    elif outcome == "released":
        metrics.JOBS_RELEASED.labels(job.kind).inc()


def lease_reaped(outcome: str) -> None:
    metrics.LEASE_REAPS.labels(outcome).inc()


def lease_lost() -> None:
    metrics.LEASES_LOST.inc()


# Jobs that could start now: the wait an operator can act on (not a backoff, not a block).
_ELIGIBLE = Q(account__blocked=False) & (Q(not_before__isnull=True) | Q(not_before__lte=Now()))


SUPERVISOR_STATES = ("warm", "running", "starting", "scaled_to_zero")


class QueueCollector:
    """Queue depth, oldest wait and running jobs per class, and workers by state, read from
    the database at each scrape (three grouped queries)."""

    def collect(self):
        # Deferred: the engine imports this module (workers -> lifecycle -> metrics).
        from builds.engine.workers import heat_floor

        now = timezone.now()
        depth = GaugeMetricFamily(
            "buildhub_queue_jobs", "Jobs queued now, per priority class.", labels=["class"]
        )
        oldest = GaugeMetricFamily(
            "buildhub_queue_oldest_wait_seconds",
            "How long the oldest job of each class that could start now has waited since it "
            "was submitted (0: none).",
            labels=["class"],
        )
        running = GaugeMetricFamily(
            "buildhub_jobs_running", "Jobs running now, per priority class.", labels=["class"]
        )
        rows = {
            (row["status"], row["priority_class"]): row
            for row in Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
            .values("status", "priority_class")
            .annotate(count=Count("id"), oldest=Min("created_at", filter=_ELIGIBLE))
        }
        for priority_class in PriorityClass.values:
            queued = rows.get((JobStatus.QUEUED, priority_class), {})
            depth.add_metric([priority_class], queued.get("count", 0))
            since = queued.get("oldest")
            oldest.add_metric([priority_class], (now - since).total_seconds() if since else 0)
            running.add_metric(
                [priority_class], rows.get((JobStatus.RUNNING, priority_class), {}).get("count", 0)
            )
        yield from (depth, oldest, running)

        fresh_since = now - dt.timedelta(seconds=settings.JOB_LEASE_SECONDS)
        by_state = dict(
            Worker.objects.filter(last_seen__gte=fresh_since)
            .exclude(state=WorkerState.STOPPED)
            .values("state")
            .annotate(count=Count("id"))
            .values_list("state", "count")
        )
        workers = GaugeMetricFamily(
            "buildhub_workers",
            "Workers (clusters) seen within a lease, by state.",
            labels=["state"],
        )
        for state in WorkerState.values:
            if state != WorkerState.STOPPED:
                workers.add_metric([state], by_state.get(state, 0))
        yield workers

        # The supervisor keeps no row: its state as the admin dashboard words it.
        floor = heat_floor()
        live = sum(by_state.get(state, 0) for state in LIVE_WORKER_STATES)
        queued = sum(rows[key]["count"] for key in rows if key[0] == JobStatus.QUEUED)
        current = (
            "warm" if floor else "running" if live else "starting" if queued else "scaled_to_zero"
        )
        supervisor = GaugeMetricFamily(
            "buildhub_supervisor_state",
            "1 for the supervisor's state now: warm (a heat-up holds workers), running, "
            "starting (jobs wait for a first worker) or scaled_to_zero.",
            labels=["state"],
        )
        for state in SUPERVISOR_STATES:
            supervisor.add_metric([state], 1 if state == current else 0)
        yield supervisor
        yield GaugeMetricFamily(
            "buildhub_heat_up_floor_workers",
            "Workers an active heat-up keeps warm (0: none).",
            value=floor,
        )
