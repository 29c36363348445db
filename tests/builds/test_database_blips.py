"""A database that is briefly away (a restart, a failover) must not cost running jobs.

Found by the fault drill (`make chaos`): a PostgreSQL restart of about a second stopped every
running job ("monitor failed", lease lost) and spent an attempt of each, and a log batch
that could not be written was dropped. Here the database errors are injected into the real
runner, in this process, with real child processes.
"""

import pytest
from django.db import OperationalError

from builds.choices import JobStatus
from builds.engine import lifecycle, logs
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account
from tests.support.runner import (
    grandchild_pid,
    logs_of,
    pid_alive,
    reload,
    run_in_thread,
    run_one,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def account(db):
    worker("ghost")
    return make_account("enterprise", "Blip Co")


def failing_first(real, times: int):
    """``real``, except that its first ``times`` calls raise as a lost connection does."""
    calls = {"n": 0}

    def call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    call.calls = calls
    return call


def assert_complete_logs(job):
    lines = logs_of(job)
    assert [seq for seq, _ in lines] == list(range(1, len(lines) + 1))
    assert [m for _, m in lines if m.startswith("step")] == [f"step {n}/4" for n in range(1, 5)]
    assert job.log_seq == len(lines)


def test_failed_lease_renewals_within_the_lease_keep_the_job(account, settings, monkeypatch):
    settings.JOB_LEASE_SECONDS = 30
    settings.JOB_HEARTBEAT_SECONDS = 1
    renew = failing_first(lifecycle.renew_lease, times=2)
    monkeypatch.setattr(lifecycle, "renew_lease", renew)
    job = queue_jobs(account, 1, params={"seconds": 4, "steps": 4})[0]

    assert run_one() == str(job.pk)

    job = reload(job)
    assert renew.calls["n"] >= 3  # two failed renewals, then renewed again
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert_complete_logs(job)


def test_log_lines_and_progress_survive_failed_writes(account, monkeypatch):
    append = failing_first(logs.append_logs, times=2)
    progress = failing_first(lifecycle.set_progress, times=2)
    monkeypatch.setattr(logs, "append_logs", append)
    monkeypatch.setattr(lifecycle, "set_progress", progress)
    job = queue_jobs(account, 1, params={"seconds": 0.8, "steps": 4})[0]

    assert run_one() == str(job.pk)

    job = reload(job)
    assert append.calls["n"] > 2 and progress.calls["n"] > 2
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert_complete_logs(job)  # the lines of the failed batches were written later, in order


def test_an_outage_longer_than_the_lease_stops_the_job(account, settings, monkeypatch):
    settings.JOB_LEASE_SECONDS = 3
    settings.JOB_HEARTBEAT_SECONDS = 1

    def unavailable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(lifecycle, "renew_lease", unavailable)
    job = queue_jobs(account, 1, kind="test.tree")[0]
    thread = run_in_thread()
    grandchild = grandchild_pid(job)
    thread.join(timeout=60)

    assert not thread.is_alive()
    job = reload(job)
    assert job.status == JobStatus.RUNNING  # left to the reaper once the lease expires
    assert not pid_alive(grandchild)  # the tool was stopped before another worker may start
