"""The engine with real processes: supervisor, django-q2 clusters, child tools, Redis.

Each test starts workers as subprocesses against the test database and the test Redis, and
checks what users rely on from marker files the jobs' child processes write: every job ran,
none ran twice at the same time, no account exceeded its concurrency limit.
"""

import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from buildhub.embedded_redis import EmbeddedRedis
from builds.choices import JobStatus, WorkerState
from builds.models import Job, Worker
from tests.builds.engine_helpers import sleep_job
from tests.support.accounts import make_account
from tests.support.live import all_ended, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def read_markers(marker_dir: Path) -> dict[str, list[dict]]:
    """Per job id: its executions, each {attempt, pid, start, end}."""
    runs: dict[tuple, dict] = {}
    for path in marker_dir.glob("*.marker"):
        for line in path.read_text().splitlines():
            what, at, job_id, attempt, pid = line.split()
            run = runs.setdefault(
                (job_id, attempt, pid), {"attempt": int(attempt), "pid": int(pid)}
            )
            run[what] = float(at)
    by_job = defaultdict(list)
    for (job_id, _, _), run in runs.items():
        by_job[job_id].append(run)
    return by_job


def max_overlap(intervals) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in points:
        current += step
        peak = max(peak, current)
    return peak


def test_four_workers_run_every_job_once_within_each_accounts_limit(worker_processes, tmp_path):
    pro, starter, enterprise = (
        make_account(t, f"{t} live") for t in ("pro", "starter", "enterprise")
    )
    jobs = [sleep_job(pro, f"pro-{n}.marker") for n in range(6)]
    jobs += [sleep_job(starter, f"starter-{n}.marker") for n in range(4)]
    jobs += [sleep_job(enterprise, f"ent-{n}.marker") for n in range(6)]

    worker_processes.start("runworkers", "--clusters", "4", BUILDHUB_WORKERS="1")
    wait_until(all_ended(jobs), message="all jobs to end")

    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    runs = read_markers(tmp_path)
    assert len(runs) == len(jobs)
    for job_runs in runs.values():
        assert len(job_runs) == 1  # executed exactly once
        assert "end" in job_runs[0]
    intervals = defaultdict(list)
    for job in Job.objects.select_related("account"):
        run = runs[str(job.pk)][0]
        intervals[job.account.slug].append((run["start"], run["end"]))
    assert max_overlap(intervals[pro.slug]) <= 2
    assert max_overlap(intervals[starter.slug]) == 1
    assert max_overlap(intervals[enterprise.slug]) <= 5


def test_kill_9_of_a_busy_worker_moves_its_job_to_another(worker_processes, tmp_path):
    account = make_account("enterprise", "Kill Co")
    job = sleep_job(account, "victim.marker", seconds=3, steps=6)
    worker_processes.start("runworkers", "--clusters", "2", BUILDHUB_WORKERS="1")

    # the marker file exists a moment before its first line does
    wait_until(lambda: read_markers(tmp_path).get(str(job.pk)), message="the job to start")
    first = read_markers(tmp_path)[str(job.pk)][0]
    with open(f"/proc/{first['pid']}/stat") as stat:
        executing_worker = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(executing_worker, signal.SIGKILL)

    wait_until(all_ended([job]), message="the job to finish elsewhere")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 2
    runs = sorted(read_markers(tmp_path)[str(job.pk)], key=lambda run: run["start"])
    assert [run["attempt"] for run in runs] == [1, 2]
    assert "end" not in runs[0]  # the tool died with its worker...
    assert not Path(f"/proc/{first['pid']}").exists()
    assert "end" in runs[1]  # ...and the job ran again, once, to the end


def test_sigterm_lets_short_jobs_finish_and_releases_long_ones(worker_processes, tmp_path):
    account = make_account("enterprise", "Drain Co")
    short = sleep_job(account, "short.marker", seconds=1, steps=2)
    long = sleep_job(account, "long.marker", seconds=60, steps=60)
    worker_process = worker_processes.start("runcluster", BUILDHUB_WORKERS="2")
    wait_until(
        lambda: (tmp_path / "short.marker").exists() and (tmp_path / "long.marker").exists(),
        message="both jobs to start",
    )

    worker_process.send_signal(signal.SIGTERM)
    worker_process.wait(60)

    short.refresh_from_db()
    long.refresh_from_db()
    assert short.status == JobStatus.SUCCEEDED
    assert long.status == JobStatus.QUEUED
    assert long.attempts == 0  # released, not failed: the attempt was not spent
    assert long.worker_id is None
    long_run = read_markers(tmp_path)[str(long.pk)][0]
    assert not Path(f"/proc/{long_run['pid']}").exists()
    assert Worker.objects.get(pid=worker_process.pid).state == WorkerState.STOPPED


def test_redis_outage_loses_no_job(worker_processes, tmp_path):
    private = EmbeddedRedis(tmp_path / "redis" / "redis.sock")
    private.start()
    try:
        worker_processes.env["REDIS_URL"] = private.url
        account = make_account("enterprise", "Outage Co")
        jobs = [sleep_job(account, f"before-{n}.marker", seconds=0.5) for n in range(5)]
        worker_processes.start("runworkers", "--clusters", "2", BUILDHUB_WORKERS="1")
        wait_until(lambda: any(tmp_path.glob("before-*.marker")), message="work to start")

        private.stop()
        jobs += [sleep_job(account, f"during-{n}.marker", seconds=0.5) for n in range(5)]
        time.sleep(3)
        private.start()
        jobs += [sleep_job(account, f"after-{n}.marker", seconds=0.5) for n in range(3)]

        wait_until(all_ended(jobs), seconds=120, message="every job to end after the outage")
        assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
        runs = read_markers(tmp_path)
        assert sorted(runs) == sorted(str(job.pk) for job in jobs)
        assert all(len([r for r in job_runs if "end" in r]) == 1 for job_runs in runs.values())
    finally:
        worker_processes.stop_all()
        private.stop()


def live_worker_count():
    return Worker.objects.filter(
        state__in=[WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY]
    ).count()


def test_supervisor_scales_to_zero_wakes_for_work_and_honours_heat_up(worker_processes, tmp_path):
    from datetime import timedelta

    from builds.engine import workers

    worker_processes.start(
        "runworkers", "--clusters", "1", "--idle-seconds", "2", BUILDHUB_WORKERS="1"
    )
    job = sleep_job(make_account("pro", "Wake Co"), "wake.marker", seconds=0.2, steps=1)
    wait_until(all_ended([job]), seconds=60, message="a worker to start for the queued job")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    wait_until(
        lambda: not Worker.objects.exclude(state=WorkerState.STOPPED).exists(),
        message="scale to zero when idle (every worker stopped)",
    )
    assert Worker.objects.filter(state=WorkerState.STOPPED).exists()

    later = sleep_job(make_account("pro", "Wake Again Co"), "again.marker", seconds=0.2)
    wait_until(all_ended([later]), seconds=60, message="a worker to start again from zero")

    workers.heat_up(3, timedelta(minutes=5), by="test")
    wait_until(lambda: live_worker_count() == 3, message="heat-up to three workers")
    workers.cool_down()
    wait_until(lambda: live_worker_count() == 0, message="cool down to zero")
