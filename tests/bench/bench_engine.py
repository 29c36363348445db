"""The job engine against its own queue: django-q2 alone, BuildHub jobs end to end, claims.

(a) bare django-q2: no-op tasks through one cluster of 2 worker processes on the same Redis
    broker, from the first enqueue until the last has run (tasks/s);
(b) BuildHub: ``diagnostic.noop`` jobs through the same cluster, from the first
    ``submit_job`` until the last is ``succeeded`` (submit → ticket → claim → run → finish);
    target: at least half of (a);
    (a) and (b) are measured in alternating rounds, each reported as its rounds' median;
(b2) the workers' side of (b) alone: the same number of jobs queued beforehand (one INSERT,
    without tickets), then one ticket per job sent at once (``submit_job`` sends fewer: none
    while a ticket for every worker process waits), from the first ticket until the last job
    is ``succeeded``; (b) adds a committed ``submit_job`` per job, made one after another by
    this one process;
(c) ``claim_next_job`` latency on a full queue (all four classes waiting), in this process.
"""

import statistics
import time

import redis
from django.conf import settings
from django.db import transaction
from django_q.brokers import get_broker
from django_q.tasks import async_task

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.submit import submit_job
from builds.engine.tickets import issue_ticket, ticket_broker
from builds.models import Job, Worker
from builds.services import create_account
from tests.bench.helpers import percentile, row, started, wait_until

COUNTER = "bench:noop:done"
WORKERS = 2
ROUNDS = 3
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


def unfinished() -> bool:
    """Whether any job waits or runs (during (b) and (b2) the account's are the only ones):
    a look at the two small partial indexes, so that watching costs the machine under test
    next to nothing. Counting the succeeded ones among the ids every 20 ms took a noticeable
    share of its CPU, and so did filtering by account, which reads the account's whole
    index, longer every round."""
    return (
        Job.objects.filter(status=JobStatus.QUEUED).exists()
        or Job.objects.filter(status=JobStatus.RUNNING).exists()
    )


def all_succeeded(ids) -> None:
    failed = Job.objects.filter(pk__in=ids).exclude(status=JobStatus.SUCCEEDED).count()
    if failed:
        raise RuntimeError(f"{failed} no-op jobs did not succeed")


def job_rate(ctx, account, count: int) -> float:
    began = time.perf_counter()
    ids = [
        submit_job(account, "diagnostic.noop", {}, staff=True, submitted_by="bench")[0].pk
        for _ in range(count)
    ]
    wait_until(
        lambda: not unfinished(),
        seconds=120 + count / 2,
        what="no-op jobs to succeed",
        poll=0.02,
    )
    elapsed = time.perf_counter() - began
    all_succeeded(ids)
    ctx.log(f"(b) {count} no-op jobs in {elapsed:.2f}s")
    return count / elapsed


def drain_rate(ctx, account, count: int) -> float:
    """(b2): jobs already queued, then a ticket for each; jobs/s until the last succeeded."""
    # (b)'s spare tickets first: none may start on these jobs before the clock does
    wait_until(lambda: ticket_broker().queue_size() == 0, seconds=60, what="spare tickets")
    time.sleep(1)  # the ones the cluster has taken already
    ids = [job.pk for job in fill_queue([account], per_account=count)]
    began = time.perf_counter()
    issue_ticket(count)
    wait_until(
        lambda: not unfinished(),
        seconds=120 + count / 2,
        what="queued no-op jobs to succeed",
        poll=0.02,
    )
    elapsed = time.perf_counter() - began
    all_succeeded(ids)
    ctx.log(f"(b2) {count} queued no-op jobs in {elapsed:.2f}s")
    return count / elapsed


def fill_queue(accounts, per_account: int) -> list[Job]:
    """Queued jobs as ``submit_job`` makes them, without tickets (no worker is running)."""
    return Job.objects.bulk_create(
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
    tasks, jobs, claims = (300, 150, 200) if ctx.quick else (3000, 2000, 1000)
    client = redis.Redis.from_url(settings.REDIS_URL)
    account = create_account("Bench Enterprise", tier="enterprise")
    get_broker().purge_queue()
    with started(ctx, "engine-worker", ["manage.py", "runcluster"], BUILDHUB_WORKERS=str(WORKERS)):
        bare_task_rate(ctx, client, 20)  # warm-up: the cluster is up and has imported us
        job_rate(ctx, account, 10)
        # (a) and (b) in alternating rounds, each taken as its median: this machine's speed
        # drifts over seconds, and a drift between one (a) and one (b) moved their ratio by
        # more than ten points.
        task_rates, job_rates = [], []
        for _ in range(ROUNDS):
            task_rates.append(bare_task_rate(ctx, client, tasks))
            job_rates.append(job_rate(ctx, account, jobs))
        task_rate, jobs_per_second = statistics.median(task_rates), statistics.median(job_rates)
        ctx.log(
            f"(a) rounds {', '.join(f'{rate:,.0f}' for rate in task_rates)} tasks/s; "
            f"(b) rounds {', '.join(f'{rate:,.0f}' for rate in job_rates)} jobs/s"
        )
        drained_per_second = drain_rate(ctx, account, jobs)
    get_broker().purge_queue()  # the tickets that found nothing left to claim
    latencies = claim_latencies(ctx, claims)

    share = 100 * jobs_per_second / task_rate
    return [
        row(f"(a) django-q2 no-op tasks, {WORKERS} workers, median", task_rate, "tasks/s"),
        row(
            f"(b) BuildHub no-op jobs end to end, {WORKERS} workers, median",
            jobs_per_second,
            "jobs/s",
            f">= {task_rate / 2:,.0f} (50% of a)",
            jobs_per_second >= task_rate / 2,
        ),
        row("(b)/(a)", share, "%", ">= 50", share >= 50),
        row(
            f"(b2) workers' side of (b): queued jobs run, {WORKERS} workers",
            drained_per_second,
            "jobs/s",
        ),
        row("(c) claim latency p50, full queue", percentile(latencies, 50), "ms"),
        row("(c) claim latency p95, full queue", percentile(latencies, 95), "ms"),
    ]
