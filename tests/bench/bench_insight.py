"""Queue insight cost: a page of jobs' queue_position / eta / waiting_reason on a deep queue.

Measures ``describe_jobs`` (what GET /api/v1/jobs/ computes per page) for the 50 newest
queued jobs, the ones at the back, while thousands wait in all four classes. The rows it
makes are deleted afterwards so other benchmarks see an empty queue.
"""

import datetime as dt
import statistics
import time
import uuid

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from builds.choices import JobStatus, Tier
from builds.engine.insight import describe_jobs
from builds.models import Account, Job, Worker
from builds.tiers import TIERS

PAGE = 50
# What a poll may cost: the detail a CI polls, and a full list page, at 10k queued jobs.
TARGETS = {("one job (detail)", 10_000): 50, (f"page of {PAGE}", 10_000): 250}


def _fill(depth: int, prefix: str) -> list[Account]:
    accounts = [
        Account.objects.create(name=f"{prefix} {tier}", slug=f"{prefix}-{tier}", tier=tier)
        for tier in Tier.values
    ]
    now = timezone.now()
    rows = []
    for index in range(depth):
        account = accounts[index % len(accounts)]
        rows.append(
            Job(
                id=uuid.uuid4(),
                kind="diagnostic.sleep",
                account=account,
                priority_class=TIERS[account.tier].priority_class,
                timeout_seconds=300,
                created_at=now - dt.timedelta(seconds=depth - index),
                stage="Queued",
            )
        )
    for index in range(20):  # durations for the ETA
        end = now - dt.timedelta(minutes=index + 1)
        rows.append(
            Job(
                kind="diagnostic.sleep",
                account=accounts[0],
                priority_class="P0",
                status=JobStatus.SUCCEEDED,
                timeout_seconds=300,
                started_at=end - dt.timedelta(seconds=30 + index),
                finished_at=end,
                created_at=end - dt.timedelta(seconds=60),
            )
        )
    Job.objects.bulk_create(rows, batch_size=2000)
    return accounts


def _measure(ctx, depth: int, iterations: int) -> list[dict]:
    prefix = f"bench-insight-{uuid.uuid4().hex[:6]}"
    worker = Worker.objects.create(pk=f"{prefix}:1", host="bench", pid=1, processes=4)
    accounts = _fill(depth, prefix)
    try:
        page = list(
            Job.objects.filter(status=JobStatus.QUEUED, account__in=accounts)
            .select_related("account", "account__enterprise_limit")
            .order_by("-created_at")[:PAGE]
        )
        describe_jobs(page)  # warm the caches once
        rows = []
        for label, jobs in ((f"page of {PAGE}", page), ("one job (detail)", page[:1])):
            timings = []
            for _ in range(iterations):
                with CaptureQueriesContext(connection) as queries:
                    started = time.perf_counter()
                    describe_jobs(jobs)
                    timings.append((time.perf_counter() - started) * 1000)
            p50 = statistics.median(timings)
            ctx.log(f"insight {label}, {depth} queued: {p50:.1f} ms, {len(queries)} queries")
            target = TARGETS.get((label, depth))
            rows.append(
                {
                    "name": f"queue insight, {label}, {depth} queued: p50",
                    "value": round(p50, 2),
                    "unit": "ms",
                    "target": f"≤ {target} ms" if target else None,
                    "ok": p50 <= target if target else None,
                }
            )
        rows.append(
            {
                "name": "queue insight queries per page (any depth)",
                "value": len(queries),
                "unit": "queries",
                "target": "≤ 7",
                "ok": len(queries) <= 7,
            }
        )
        return rows
    finally:
        Job.objects.filter(account__in=accounts).delete()
        Account.objects.filter(pk__in=[a.pk for a in accounts]).delete()
        worker.delete()


def run(ctx) -> list[dict]:
    depths = (1_000, 10_000) if ctx.quick else (1_000, 10_000, 50_000)
    rows = []
    for depth in depths:
        rows += _measure(ctx, depth, 5 if ctx.quick else 15)
    return rows
