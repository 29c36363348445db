"""What the operations dashboard shows: queues, accounts at work, workers, the last 24 hours.

One function, ``snapshot()``, reads it all from the database in a handful of queries; the
admin index renders it as plain HTML and the dashboard websocket sends it as JSON.
"""

import datetime as dt
from collections import Counter, defaultdict

from django.conf import settings
from django.db.models import Count, Min
from django.db.models.functions import TruncHour
from django.utils import timezone

from builds.choices import LIVE_WORKER_STATES, JobStatus, PriorityClass, WorkerState
from builds.engine import workers as worker_service
from builds.limits import concurrency_limit
from builds.models import Account, Job, Worker

CLASSES = [choice.value for choice in PriorityClass]
CHART_HOURS = 24


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _seconds(delta: dt.timedelta) -> float:
    return max(0.0, delta.total_seconds())


def queue_depths(now: dt.datetime) -> list[dict]:
    """Per class: queued jobs, the oldest one's wait, and p50/p95 wait of the last hour."""
    queued = {
        row["priority_class"]: row
        for row in Job.objects.filter(status=JobStatus.QUEUED)
        .values("priority_class")
        .annotate(depth=Count("id"), oldest=Min("created_at"))
    }
    waits: defaultdict[str, list[float]] = defaultdict(list)
    started = Job.objects.filter(started_at__gte=now - dt.timedelta(hours=1)).values_list(
        "priority_class", "created_at", "started_at"
    )
    for priority_class, created_at, started_at in started:
        assert started_at is not None  # filtered on it
        waits[priority_class].append(_seconds(started_at - created_at))
    rows = []
    for priority_class in CLASSES:
        row = queued.get(priority_class, {})
        oldest = row.get("oldest")
        rows.append(
            {
                "class": priority_class,
                "label": PriorityClass(priority_class).label,
                "depth": row.get("depth", 0),
                "oldest_wait_seconds": round(_seconds(now - oldest)) if oldest else None,
                "wait_p50_seconds": _round(percentile(waits[priority_class], 0.50)),
                "wait_p95_seconds": _round(percentile(waits[priority_class], 0.95)),
                "started_last_hour": len(waits[priority_class]),
            }
        )
    return rows


def _round(value):
    return None if value is None else round(value, 1)


def running_by_account() -> list[dict]:
    counts = dict(
        Job.objects.filter(status=JobStatus.RUNNING)
        .values_list("account")
        .annotate(running=Count("id"))
        .values_list("account", "running")
    )
    accounts = Account.objects.filter(pk__in=counts).select_related("enterprise_limit")
    rows = [
        {
            "account": account.slug,
            "name": account.name,
            "tier": account.get_tier_display(),
            "running": counts[account.pk],
            "limit": concurrency_limit(account),
        }
        for account in accounts
    ]
    return sorted(rows, key=lambda row: (-row["running"], row["account"]))


def worker_rows(now: dt.datetime) -> list[dict]:
    """Workers seen in the last hour, with their running jobs and a health verdict."""
    lease = dt.timedelta(seconds=settings.JOB_LEASE_SECONDS)
    recent = Worker.objects.filter(last_seen__gte=now - dt.timedelta(hours=1)).exclude(
        state=WorkerState.STOPPED
    )
    running = Counter(
        Job.objects.filter(status=JobStatus.RUNNING, worker__in=recent).values_list(
            "worker_id", flat=True
        )
    )
    rows = []
    for worker in recent:
        fresh = now - worker.last_seen <= lease
        rows.append(
            {
                "id": worker.id,
                "host": worker.host,
                "pid": worker.pid,
                "state": worker.state,
                "processes": worker.processes,
                "sandbox": worker.sandbox or "unknown",
                "last_seen": worker.last_seen.isoformat(),
                "last_seen_seconds": round(_seconds(now - worker.last_seen)),
                "running_jobs": running.get(worker.id, 0),
                "healthy": fresh and worker.state in LIVE_WORKER_STATES,
            }
        )
    return rows


def supervisor_state(workers: list[dict], depths: list[dict]) -> dict:
    """The supervisor's state as the database shows it (it keeps no row of its own)."""
    live = sum(1 for worker in workers if worker["healthy"])
    queued = sum(row["depth"] for row in depths)
    heat_ups = list(worker_service.active_heat_ups().order_by("-until")[:1])
    warm_until = heat_ups[0].until.isoformat() if heat_ups else None
    if heat_ups:
        state = "warm"
        text = f"warm: {worker_service.heat_floor()} worker(s) until {heat_ups[0].until:%H:%M}"
    elif live:
        state, text = "running", f"running {live} worker(s)"
    elif queued:
        state, text = "starting", "Worker starting..."
    else:
        state, text = "scaled_to_zero", "scaled to zero (no work queued)"
    return {
        "state": state,
        "text": text,
        "live_workers": live,
        "heat_floor": worker_service.heat_floor(),
        "warm_until": warm_until,
    }


def hourly(now: dt.datetime) -> dict:
    """The last 24 hours by hour: jobs finished per status, and build durations."""
    since = (now - dt.timedelta(hours=CHART_HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    hours = [since + dt.timedelta(hours=step) for step in range(CHART_HOURS)]
    index = {hour: position for position, hour in enumerate(hours)}
    by_status = {status: [0] * CHART_HOURS for status in JobStatus.values}
    finished = (
        Job.objects.filter(finished_at__gte=since)
        .annotate(hour=TruncHour("finished_at"))
        .values("hour", "status")
        .annotate(count=Count("id"))
    )
    for row in finished:
        position = index.get(row["hour"])
        if position is not None:
            by_status[row["status"]][position] = row["count"]

    durations: defaultdict[dt.datetime, list[float]] = defaultdict(list)
    waits: dict[str, defaultdict[dt.datetime, list[float]]] = {
        priority_class: defaultdict(list) for priority_class in CLASSES
    }
    started = Job.objects.filter(started_at__gte=since).values_list(
        "priority_class", "status", "created_at", "started_at", "finished_at"
    )
    for priority_class, status, created_at, started_at, finished_at in started:
        assert started_at is not None  # filtered on it
        hour = started_at.replace(minute=0, second=0, microsecond=0)
        waits[priority_class][hour].append(_seconds(started_at - created_at))
        if status == JobStatus.SUCCEEDED and finished_at:
            durations[hour].append(_seconds(finished_at - started_at))
    return {
        "hours": [hour.isoformat() for hour in hours],
        "finished": {status: counts for status, counts in by_status.items() if any(counts)},
        "duration_p50_seconds": [_round(percentile(durations[hour], 0.5)) for hour in hours],
        "duration_p95_seconds": [_round(percentile(durations[hour], 0.95)) for hour in hours],
        "wait_p95_seconds": {
            priority_class: [_round(percentile(by_hour[hour], 0.95)) for hour in hours]
            for priority_class, by_hour in waits.items()
        },
    }


def snapshot(now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    depths = queue_depths(now)
    workers = worker_rows(now)
    totals = dict(
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {
        "generated_at": now.isoformat(),
        "queued": totals.get(JobStatus.QUEUED, 0),
        "running": totals.get(JobStatus.RUNNING, 0),
        "queues": depths,
        "accounts": running_by_account(),
        "workers": workers,
        "supervisor": supervisor_state(workers, depths),
        "charts": hourly(now),
    }
