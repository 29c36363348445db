"""The job engine against its own queue: django-q2 alone, BuildHub jobs end to end, claims.

(a) bare django-q2: no-op tasks through one cluster of 2 worker processes on the same Redis
    broker, from the first enqueue until the last has run (tasks/s);
(b) BuildHub: ``diagnostic.noop`` jobs through the same cluster, from the first
    ``submit_job`` until the last is ``succeeded`` (submit → ticket → claim → run → finish);
    target: at least half of (a);
(c) ``claim_next_job`` latency on a full queue (all four classes waiting), in this process.
"""

import time

import redis
from django.conf import settings
from django.db import transaction
from django_q.brokers import get_broker
from django_q.tasks import async_task

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.dispatch import ticket_broker
from builds.engine.submit import submit_job
from builds.models import Job, Worker
from builds.services import create_account
from tests.bench.helpers import percentile, row, started, wait_until

COUNTER = "bench:noop:done"
WORKERS = 2
_redis = None


def noop_task():
    """The bare task: counts itself so the benchmark knows when all have run."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL)
    _redis.incr(COUNTER)


def done_tasks(client) -> int:
    return int(client.get(COUNTER) or 0)


def bare_task_rate(ctx, client, count: int) -> float:
    client.delete(COUNTER)
    broker = ticket_broker()  # one connection, as BuildHub's tickets use
    began = time.perf_counter()
    for _ in range(count):
        async_task("tests.bench.bench_engine.noop_task", save=False, broker=broker)
    wait_until(lambda: done_tasks(client) >= count, seconds=120 + count / 5, what="no-op tasks")
    elapsed = time.perf_counter() - began
    ctx.log(f"(a) {count} no-op tasks in {elapsed:.2f}s")
    return count / elapsed


def job_rate(ctx, account, count: int) -> float:
    began = time.perf_counter()
    ids = [
        submit_job(account, "diagnostic.noop", {}, staff=True, submitted_by="bench")[0].pk
        for _ in range(count)
    ]
    jobs = Job.objects.filter(pk__in=ids)
    wait_until(
        lambda: jobs.filter(status=JobStatus.SUCCEEDED).count() == count,
        seconds=120 + count / 2,
        what="no-op jobs to succeed",
        poll=0.02,
    )
    elapsed = time.perf_counter() - began
    failed = jobs.exclude(status=JobStatus.SUCCEEDED).count()
    if failed:
        raise RuntimeError(f"{failed} no-op jobs did not succeed")
    ctx.log(f"(b) {count} no-op jobs in {elapsed:.2f}s")
    return count / elapsed


def fill_queue(accounts, per_account: int) -> None:
    """Queued jobs as ``submit_job`` makes them, without tickets (no worker is running)."""
    Job.objects.bulk_create(
        Job(
            kind="diagnostic.noop",
            account=account,
            priority_class=account.tier_spec.priority_class,
            timeout_seconds=account.effective_limits().timeout_seconds,
            stage="Queued",
        )
        for account in accounts
        for _ in range(per_account)
    )


def claim_latencies(ctx, count: int) -> list[float]:
    accounts = [create_account(f"Claim {tier}", tier=tier) for tier in ("enterprise", "pro")]
    accounts += [create_account(f"Claim {tier}", tier=tier) for tier in ("starter", "free")]
    fill_queue(accounts, per_account=count)  # every class stays non-empty to the end
    Worker.objects.get_or_create(pk="bench-claimer", defaults={"host": "bench", "pid": 1})
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        job = claim_next_job("bench-claimer")
        latencies.append((time.perf_counter() - began) * 1000)
        with transaction.atomic():  # frees the account's slot; not part of the measure
            lifecycle.succeed_job(job.pk, job.lease_token)
    waiting = Job.objects.filter(status=JobStatus.QUEUED, account__in=accounts)
    ctx.log(f"(c) {count} claims with {waiting.count()} still queued")
    waiting.delete()  # the next benchmark starts with an empty queue
    return latencies


def run(ctx):
    tasks, jobs, claims = (300, 150, 200) if ctx.quick else (3000, 1000, 1000)
    client = redis.Redis.from_url(settings.REDIS_URL)
    account = create_account("Bench Enterprise", tier="enterprise")
    get_broker().purge_queue()
    with started(ctx, "engine-worker", ["manage.py", "runcluster"], BUILDHUB_WORKERS=str(WORKERS)):
        bare_task_rate(ctx, client, 20)  # warm-up: the cluster is up and has imported us
        job_rate(ctx, account, 10)
        task_rate = bare_task_rate(ctx, client, tasks)
        jobs_per_second = job_rate(ctx, account, jobs)
    get_broker().purge_queue()  # the tickets that found nothing left to claim
    latencies = claim_latencies(ctx, claims)

    share = 100 * jobs_per_second / task_rate
    return [
        row(f"(a) django-q2 no-op tasks, {WORKERS} workers", task_rate, "tasks/s"),
        row(
            f"(b) BuildHub no-op jobs end to end, {WORKERS} workers",
            jobs_per_second,
            "jobs/s",
            f">= {task_rate / 2:,.0f} (50% of a)",
            jobs_per_second >= task_rate / 2,
        ),
        row("(b)/(a)", share, "%", ">= 50", share >= 50),
        row("(c) claim latency p50, full queue", percentile(latencies, 50), "ms"),
        row("(c) claim latency p95, full queue", percentile(latencies, 95), "ms"),
    ]
