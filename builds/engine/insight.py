"""What a waiting user wants to know: place in the queue, expected finish, and why it waits.

Everything here reads; nothing changes a job. The figures are computed for a whole page of
jobs with a fixed number of queries (a snapshot of the queue, one counting query for all
the jobs' places, one duration sample per kind), so listing 1 job or 200 costs the same.
"""

import datetime as dt
import math
import statistics
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from builds.choices import JobStatus, PriorityClass, WorkerState
from builds.engine.claim import accounts_at_their_limit, eligible_jobs, running_per_account
from builds.engine.workers import live_workers, worker_capacity
from builds.fairness import CLASSES_BY_RANK, claims_until_served, class_for_slot
from builds.limits import concurrency_limit
from builds.models import Account, FairnessCursor, Job, Worker

WORKER_STARTING = "Worker starting..."
ACCOUNT_BLOCKED = "account blocked: its jobs wait until the hold is lifted (contact support)"


@dataclass(frozen=True)
class JobInsight:
    queue_position: int | None = None
    eta_seconds: int | None = None
    waiting_reason: str | None = None


NOTHING = JobInsight()


def cycle_position() -> int:
    return FairnessCursor.objects.filter(pk=1).values_list("position", flat=True).first() or 0


def _ahead_of(job: Job) -> Q:
    """Jobs the claim takes before ``job`` within its class: run-now first, then oldest."""
    same_flag = Q(run_now=job.run_now)
    ahead = same_flag & (
        Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, pk__lt=job.pk)
    )
    if not job.run_now:
        ahead |= Q(run_now=True)
    return Q(priority_class=job.priority_class) & ahead


def recent_duration(kind: str, sample: int | None = None) -> float | None:
    """Median seconds of the last ``sample`` succeeded jobs of ``kind``; None without any."""
    sample = sample or settings.JOB_ETA_SAMPLE
    rows = (
        Job.objects.filter(kind=kind, status=JobStatus.SUCCEEDED, started_at__isnull=False)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")[:sample]
    )
    durations = [
        (finished - started).total_seconds() for started, finished in rows if started and finished
    ]
    return statistics.median(durations) if durations else None


class _QueueSnapshot:
    """The queue as the next claims will see it, read once for a batch of jobs."""

    def __init__(self, queued: list[Job]):
        self.now = timezone.now()
        self.position = cycle_position()
        self.running = running_per_account()
        self.running_total = sum(self.running.values())
        self.at_limit = set(accounts_at_their_limit(self.running))
        self.capacity = worker_capacity()
        # One scan of the eligible jobs counts, per class and for every job, those the claim
        # takes first; jobs of accounts at their limit wait, except to count a job's siblings.
        free = ~Q(account_id__in=self.at_limit) if self.at_limit else Q()
        counts = {
            f"class_{cls}": Count("pk", filter=free & Q(priority_class=cls))
            for cls in CLASSES_BY_RANK
        }
        for index, job in enumerate(queued):
            ahead = _ahead_of(job)
            counts[f"ahead_{index}"] = Count("pk", filter=free & ahead)
            counts[f"siblings_{index}"] = Count("pk", filter=ahead & Q(account_id=job.account_id))
        # Grouped by status (all queued: one row) rather than .aggregate(), whose set-up
        # grows with the square of the number of counts.
        rows = eligible_jobs().order_by().values("status").annotate(**counts)
        totals = next(iter(rows), None) or dict.fromkeys(counts, 0)
        self.waiting: dict[str, int] = {cls: totals[f"class_{cls}"] for cls in CLASSES_BY_RANK}
        self.ahead = {job.pk: totals[f"ahead_{index}"] for index, job in enumerate(queued)}
        self.ahead_in_account = {
            job.pk: totals[f"siblings_{index}"] for index, job in enumerate(queued)
        }

    def queue_position(self, job: Job) -> int | None:
        """The claim number (1 = next) that would take ``job`` if it were eligible now."""
        if job.account.blocked:
            return None
        # An ineligible job (backoff, account at its limit) is not in the eligible counts:
        # its position is where it would stand once it becomes eligible, behind the jobs of
        # its own account that wait for the same slot.
        ahead = self.ahead[job.pk]
        if job.account_id in self.at_limit:
            ahead += self.ahead_in_account[job.pk]
        return claims_until_served(self.position, self.waiting, job.priority_class, ahead)

    def waiting_reason(self, job: Job, position: int | None) -> str:
        if job.account.blocked:
            return ACCOUNT_BLOCKED
        if job.not_before is not None and job.not_before > self.now:
            return f"retry backoff until {job.not_before.isoformat(timespec='seconds')}"
        if job.account_id in self.at_limit:
            running = self.running.get(job.account_id, 0)
            limit = concurrency_limit(job.account)
            return f"account at its concurrency limit ({running}/{limit} running)"
        if self.capacity == 0:
            return WORKER_STARTING
        if position and position > 1:
            ahead = position - 1
            return f"waiting for {ahead} job{'s' if ahead != 1 else ''} ahead"
        if self.running_total >= self.capacity:
            return (
                f"next in line: waiting for a free worker slot "
                f"({self.running_total}/{self.capacity} busy)"
            )
        return "next in line: a worker is picking it up"

    def eta_seconds(self, job: Job, position: int | None, duration: float | None) -> int | None:
        """Seconds until the job should finish: whole waves of ``capacity`` jobs of median
        ``duration`` run before it, then the job itself (see README, "Queue insight")."""
        if duration is None or position is None or self.capacity == 0:
            return None
        waves_before = (self.running_total + position - 1) // self.capacity
        # The account's own jobs run at most ``limit`` at a time, however many slots are free.
        account_waves = (
            self.running.get(job.account_id, 0) + self.ahead_in_account[job.pk]
        ) // concurrency_limit(job.account)
        start_in = max(waves_before, account_waves) * duration
        if job.not_before is not None:
            start_in = max(start_in, (job.not_before - self.now).total_seconds())
        return math.ceil(start_in + duration)


def describe_jobs(jobs) -> dict:
    """``{job id: JobInsight}`` for ``jobs`` (with ``account`` loaded), in a fixed number of
    queries."""
    jobs = list(jobs)
    queued = [job for job in jobs if job.status == JobStatus.QUEUED]
    running = [job for job in jobs if job.status == JobStatus.RUNNING]
    if not queued and not running:
        return {}
    durations = {kind: recent_duration(kind) for kind in {job.kind for job in queued + running}}
    insights = {}
    if queued:
        snapshot = _QueueSnapshot(queued)
        for job in queued:
            position = snapshot.queue_position(job)
            insights[job.pk] = JobInsight(
                queue_position=position,
                eta_seconds=snapshot.eta_seconds(job, position, durations[job.kind]),
                waiting_reason=snapshot.waiting_reason(job, position),
            )
    now = timezone.now()
    for job in running:
        duration = durations[job.kind]
        eta = None
        if duration is not None and job.started_at is not None:
            eta = max(0, math.ceil(duration - (now - job.started_at).total_seconds()))
        insights[job.pk] = JobInsight(eta_seconds=eta)
    return insights


def describe_job(job: Job) -> JobInsight:
    return describe_jobs([job]).get(job.pk, NOTHING)


def _seconds_since(moment: dt.datetime, now: dt.datetime) -> int:
    return max(0, round((now - moment).total_seconds()))


# --- the operators' view (manage.py queue) ------------------------------------------------
def queue_overview() -> dict:
    """Depth and oldest wait per class, running jobs per account against its limit, workers."""
    now = timezone.now()
    eligible = Q(account__blocked=False) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    by_class = {
        row["priority_class"]: row
        for row in Job.objects.filter(status=JobStatus.QUEUED)
        .values("priority_class")
        .annotate(
            queued=Count("pk"), eligible=Count("pk", filter=eligible), oldest=Min("created_at")
        )
    }
    classes = []
    for cls in CLASSES_BY_RANK:
        row = by_class.get(cls, {})
        oldest = row.get("oldest")
        classes.append(
            {
                "class": str(cls),
                "label": PriorityClass(cls).label,
                "queued": row.get("queued", 0),
                "eligible": row.get("eligible", 0),
                "oldest_wait_seconds": _seconds_since(oldest, now) if oldest else None,
            }
        )

    per_account = (
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .values("account")
        .annotate(
            running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
            queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
        )
    )
    counts = {row["account"]: row for row in per_account}
    accounts = []
    for account in Account.objects.filter(pk__in=counts).select_related("enterprise_limit"):
        row = counts[account.pk]
        accounts.append(
            {
                "account": account.slug,
                "tier": account.tier,
                "running": row["running"],
                "limit": concurrency_limit(account),
                "queued": row["queued"],
                "blocked": account.blocked,
            }
        )
    accounts.sort(key=lambda row: (-row["running"], -row["queued"], row["account"]))

    live = set(live_workers().values_list("pk", flat=True))
    workers = [
        {
            "id": worker.pk,
            "host": worker.host,
            "pid": worker.pid,
            "state": worker.state,
            "live": worker.pk in live,
            "processes": worker.processes,
            "running_jobs": worker.running_jobs,
            "last_seen": worker.last_seen.isoformat(timespec="seconds"),
            "last_seen_seconds_ago": _seconds_since(worker.last_seen, now),
        }
        for worker in Worker.objects.exclude(state=WorkerState.STOPPED)
        .annotate(running_jobs=Count("jobs", filter=Q(jobs__status=JobStatus.RUNNING)))
        .order_by("started_at")
    ]
    position = cycle_position()
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "cycle_position": position,
        "next_slot": str(class_for_slot(position)),
        "classes": classes,
        "accounts": accounts,
        "workers": workers,
        "capacity": sum(w["processes"] for w in workers if w["live"]),
    }
