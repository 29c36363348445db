"""The engine with a long history behind it, beside a fresh table, in the same run.

Production's job tables hold months of finished jobs and their logs; the engine bench
(bench_engine) starts on empty ones. Here, in one run:

1. fresh: (a) django-q2 no-op tasks/s and (b) BuildHub no-op jobs/s in alternating rounds,
   then (c) claim latency on a full queue;
2. the tables are filled with ``BENCH_HISTORY_JOBS`` finished jobs (1,000,000 is the
   production case; the module runs only when it is set, so ``make bench`` keeps its time:
   ``BENCH_HISTORY_JOBS=1000000 make bench BENCH_ARGS="--only history"``), three log lines
   each, spread over the last 180 days, with INSERT ... SELECT generate_series, then
   VACUUM ANALYZE as a deployment's autovacuum would have done long before;
3. long history: (a), (b) and (c) again;
4. the retention sweep on that table: jobs archived and deleted per second and the CPU it
   costs per 1,000 jobs (for ``SWEEP_SECONDS`` at most).

Beside each throughput: the CPU milliseconds per task or job of each process, read from
/proc before and after each round: the worker cluster (its processes), this database's
PostgreSQL backends, the submitter (this process) and the Redis server (the whole server:
on a shared machine it includes other clients' commands). Each figure is the median of
``ROUNDS`` rounds; the load average is logged with each round.
"""

import os
import statistics
import time

import psutil
import redis
from django.conf import settings
from django.db import connection
from django_q.brokers import get_broker

from builds import retention
from builds.models import Job
from builds.services import create_account
from tests.bench import bench_engine
from tests.bench.helpers import percentile, row, started

ROUNDS = 3
HISTORY_ACCOUNTS = 50
LOG_LINES = 3
SWEEP_SECONDS = 30
GROUPS = ("cluster", "postgres", "submitter", "redis")


def history_size() -> int:
    return int(os.environ.get("BENCH_HISTORY_JOBS") or 0)


# --- CPU from /proc -----------------------------------------------------------------------
def _cpu(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def backend_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend'"
        )
        return [pid for (pid,) in cursor.fetchall()]


class CpuMeter:
    """CPU seconds of each group of processes between ``start()`` and ``stop()``: a process
    present at both reads counts its difference, one that appeared counts whole (one that
    ended in between is lost: the cluster's workers and the backends live throughout)."""

    def __init__(self, cluster: psutil.Process, redis_pid: int | None):
        self.cluster = cluster
        self.redis_pid = redis_pid

    def pids(self) -> dict[str, list[int]]:
        try:
            cluster = [self.cluster.pid] + [c.pid for c in self.cluster.children(recursive=True)]
        except psutil.Error:
            cluster = []
        return {
            "cluster": cluster,
            "postgres": backend_pids(),
            "submitter": [os.getpid()],
            "redis": [self.redis_pid] if self.redis_pid else [],
        }

    def read(self) -> dict[str, dict[int, float]]:
        return {
            group: {pid: cpu for pid in pids if (cpu := _cpu(pid)) is not None}
            for group, pids in self.pids().items()
        }

    def start(self):
        self.before = self.read()

    def stop(self) -> dict[str, float]:
        after = self.read()
        return {
            group: sum(cpu - self.before[group].get(pid, 0.0) for pid, cpu in after[group].items())
            for group in GROUPS
        }


def redis_pid(client) -> int | None:
    pid = int(client.info("server").get("process_id", 0))
    return pid if pid and psutil.pid_exists(pid) else None


# --- the rounds ---------------------------------------------------------------------------
def measured_rounds(ctx, phase: str, client, account, meter, tasks: int, jobs: int) -> dict:
    """(a) and (b) in alternating rounds; medians of rates and of CPU ms per unit."""
    rates = {"a": [], "b": []}
    cpu = {"a": {g: [] for g in GROUPS}, "b": {g: [] for g in GROUPS}}
    for number in range(ROUNDS):
        for case, count in (("a", tasks), ("b", jobs)):
            meter.start()
            if case == "a":
                rate = bench_engine.bare_task_rate(ctx, client, count)
            else:
                rate = bench_engine.job_rate(ctx, account, count)
            used = meter.stop()
            rates[case].append(rate)
            for group in GROUPS:
                cpu[case][group].append(1000 * used[group] / count)
            ctx.log(
                f"{phase} round {number + 1} ({case}) {rate:,.0f}/s, CPU ms per unit: "
                + ", ".join(f"{g} {1000 * used[g] / count:.2f}" for g in GROUPS)
                + f"; load average {os.getloadavg()[0]:.2f}"
            )
    return {
        "rates": {case: statistics.median(values) for case, values in rates.items()},
        "cpu": {
            case: {g: statistics.median(values) for g, values in groups.items()}
            for case, groups in cpu.items()
        },
    }


def claim_accounts():
    return [
        create_account(f"History claim {tier}", tier=tier)
        for tier in ("enterprise", "pro", "starter", "free")
    ]


def claim_latencies(ctx, accounts, count: int) -> list[float]:
    from django.db import transaction

    from builds.choices import JobStatus
    from builds.engine import lifecycle
    from builds.engine.claim import claim_next_job
    from builds.models import Worker

    bench_engine.fill_queue(accounts, per_account=count)
    Worker.objects.get_or_create(pk="bench-claimer", defaults={"host": "bench", "pid": 1})
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        job = claim_next_job("bench-claimer")
        latencies.append((time.perf_counter() - began) * 1000)
        with transaction.atomic():
            lifecycle.succeed_job(job.pk, job.lease_token)
    Job.objects.filter(status=JobStatus.QUEUED, account__in=accounts).delete()
    return latencies


# --- the history --------------------------------------------------------------------------
FILL_JOBS = """
INSERT INTO builds_job (
    id, kind, account_id, priority_class, status, progress, stage, params, result, error,
    attempts, max_attempts, not_before, timeout_seconds, created_at, started_at, finished_at,
    run_now, idempotency_key, log_seq, state_seq, submitted_by
)
SELECT gen_random_uuid(), 'diagnostic.noop', (%(accounts)s::bigint[])[1 + n %% %(count)s],
    'P0', CASE WHEN n %% 50 = 0 THEN 'failed' WHEN n %% 97 = 0 THEN 'cancelled'
    ELSE 'succeeded' END,
    100, 'Done', '{}'::jsonb, '{"ok": true}'::jsonb, '', 1, 3, NULL, 600,
    at, at, at + interval '2 s', false, '', %(lines)s, 3, 'history'
FROM generate_series(1, %(jobs)s) n,
    LATERAL (SELECT now() - interval '180 days' * (1 - n::float8 / %(jobs)s)
        - interval '1 hour' AS at) t
"""
FILL_LOGS = """
INSERT INTO builds_joblog (job_id, seq, ts, level, message)
SELECT job.id, line, job.finished_at, 'info',
    'step ' || line || ' of a finished job: ' || md5(job.id::text || line)
FROM builds_job job, generate_series(1, %(lines)s) line
WHERE job.submitted_by = 'history'
"""


def fill_history(ctx, jobs: int) -> None:
    accounts = [
        create_account(f"History {number}", tier="pro").pk for number in range(HISTORY_ACCOUNTS)
    ]
    params = {"accounts": accounts, "count": len(accounts), "jobs": jobs, "lines": LOG_LINES}
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL_JOBS, params)
        cursor.execute(FILL_LOGS, params)
        filled = time.perf_counter()
        cursor.execute("VACUUM ANALYZE builds_job")
        cursor.execute("VACUUM ANALYZE builds_joblog")
        # The fill's gigabyte of WAL starts checkpoints that would otherwise run during the
        # rounds (writing pages, and full page images on each page's next change): a
        # deployment's history was written long before.
        cursor.execute("CHECKPOINT")
    ctx.log(
        f"history: {jobs:,} finished jobs and {jobs * LOG_LINES:,} log lines in "
        f"{filled - began:.1f}s, vacuum and checkpoint {time.perf_counter() - filled:.1f}s; "
        + table_sizes()
    )


def table_sizes() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup, "
            "n_tup_hot_upd, n_tup_upd "
            "FROM pg_stat_user_tables WHERE relname IN ('builds_job', 'builds_joblog') "
            "ORDER BY relname"
        )
        return "; ".join(
            f"{name} {size / 2**20:,.0f} MB with indexes, {live:,} live, {dead:,} dead tuples, "
            f"{hot:,} of {updates:,} updates HOT"
            for name, size, live, dead, hot, updates in cursor.fetchall()
        )


def sweep_cost(ctx) -> dict:
    """The retention sweep over the history for SWEEP_SECONDS: jobs/s and CPU per 1,000."""
    meter_self = psutil.Process()
    backend = _backend_cpu()
    cpu_before = meter_self.cpu_times()
    result = retention.sweep_jobs(days=90, max_seconds=SWEEP_SECONDS)
    cpu_after = meter_self.cpu_times()
    process_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    backend_cpu = _backend_cpu() - backend
    jobs = max(result.jobs_deleted, 1)
    ctx.log(f"sweep: {result}; {table_sizes()}")
    return {
        "jobs_per_second": result.jobs_deleted / result.seconds,
        "process_ms_per_1000": 1000 * process_cpu / jobs * 1000,
        "postgres_ms_per_1000": 1000 * backend_cpu / jobs * 1000,
        "archives": len(result.archives),
    }


def _backend_cpu() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return _cpu(pid) or 0.0


def run(ctx):
    tasks, jobs, claims = (300, 150, 200) if ctx.quick else (3000, 2000, 1000)
    history = history_size()
    if history <= 0:
        ctx.log("history: skipped (set BENCH_HISTORY_JOBS, e.g. 1000000, to run it)")
        return []
    client = redis.Redis.from_url(settings.REDIS_URL)
    account = create_account("History Enterprise", tier="enterprise")
    claimers = claim_accounts()
    get_broker().purge_queue()
    phases = {}
    with started(
        ctx,
        "history-worker",
        ["manage.py", "runcluster"],
        BUILDHUB_WORKERS=str(bench_engine.WORKERS),
    ) as cluster:
        meter = CpuMeter(psutil.Process(cluster.pid), redis_pid(client))
        bench_engine.bare_task_rate(ctx, client, 20)  # warm-up
        bench_engine.job_rate(ctx, account, 10)
        for phase in ("fresh", "history"):
            if phase == "history":
                fill_history(ctx, history)
            phases[phase] = measured_rounds(ctx, phase, client, account, meter, tasks, jobs)
            get_broker().purge_queue()
            phases[phase]["claims"] = claim_latencies(ctx, claimers, claims)
            ctx.log(f"{phase}: {table_sizes()}")
    sweep = sweep_cost(ctx)
    return rows(phases, sweep, history)


def rows(phases: dict, sweep: dict, history: int) -> list[dict]:
    results = []
    labels = {"fresh": "fresh tables", "history": f"{history:,} finished jobs"}
    for phase, label in labels.items():
        found = phases[phase]
        a, b = found["rates"]["a"], found["rates"]["b"]
        results += [
            row(f"(a) django-q2 no-op tasks, {label}, median", a, "tasks/s"),
            row(f"(b) BuildHub no-op jobs, {label}, median", b, "jobs/s"),
            row(f"(b)/(a), {label}", 100 * b / a, "%"),
        ]
        for case, unit in (("a", "task"), ("b", "job")):
            for group in GROUPS:
                results.append(
                    row(
                        f"({case}) CPU of {group} per {unit}, {label}",
                        found["cpu"][case][group],
                        f"ms/{unit}",
                    )
                )
        results += [
            row(f"(c) claim latency p50, {label}", percentile(found["claims"], 50), "ms"),
            row(f"(c) claim latency p95, {label}", percentile(found["claims"], 95), "ms"),
        ]
    # CPU per job moves less with the machine's speed than throughput does: the engine's
    # own processes (Redis is shared), with history against fresh, in the same run.
    engine = ("cluster", "postgres", "submitter")
    fresh, old = (sum(phases[p]["cpu"]["b"][g] for g in engine) for p in labels)
    share = 100 * old / fresh
    results.append(
        row("(b) engine CPU per job, with history / fresh", share, "%", "<= 110", share <= 110)
    )
    results += [
        row("retention sweep: jobs archived and deleted", sweep["jobs_per_second"], "jobs/s"),
        row(
            "retention sweep: CPU of the sweeping process",
            sweep["process_ms_per_1000"],
            "ms/1000 jobs",
        ),
        row(
            "retention sweep: CPU of its PostgreSQL backend",
            sweep["postgres_ms_per_1000"],
            "ms/1000 jobs",
        ),
    ]
    return results
