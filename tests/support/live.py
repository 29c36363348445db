"""The live stack for tests: BuildHub's own processes started as subprocesses on the test
database and the test Redis, the way `make run` starts them.

``Processes`` starts management commands (``runcluster``, ``runworkers``) with a fast engine;
``Stack`` is daphne plus the worker supervisor. A test that asks for one of the fixtures
named in ``LIVE_FIXTURES`` is marked ``integration`` (tests/conftest.py).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from builds.choices import JobStatus
from tests.support.net import free_port

# Short leases, heartbeats and polls, so a test sees the engine's reactions within seconds.
FAST_ENGINE = {
    "JOB_LEASE_SECONDS": "5",
    "JOB_HEARTBEAT_SECONDS": "1",
    "JOB_POLL_SECONDS": "0.2",
    "JOB_RETRY_BASE_SECONDS": "1",
    "JOB_KILL_GRACE_SECONDS": "2",
    "REAPER_INTERVAL_SECONDS": "1",
    "RECONCILE_INTERVAL_SECONDS": "1",
    "WORKER_DRAIN_GRACE_SECONDS": "3",
    "DJANGO_Q_LOG_LEVEL": "WARNING",
}

# The fixtures that start processes or servers (live_server: pytest-django's, in a thread);
# tests using them are integration tests.
LIVE_FIXTURES = frozenset({"worker_processes", "live_stack", "live_server", "s3_server"})


def database_env() -> dict:
    """Point a subprocess at the database this test uses (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return {"BUILDHUB_SQLITE_PATH": str(db["NAME"])}
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return {"DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"}


def purge_tickets() -> None:
    """Tickets left in Redis by earlier tests name jobs of no database: a fresh worker would
    spend its first seconds on them."""
    from django_q.brokers import get_broker

    get_broker().purge_queue()


def wait_until(predicate, seconds=90, message="condition"):
    """Poll until ``predicate()`` is true; a limit on a hung test, not a timing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {message}")


def all_ended(jobs):
    """A predicate for ``wait_until``: every one of ``jobs`` has ended."""
    from builds.models import Job

    ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
    return lambda: all(
        s in ended
        for s in Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )


class Processes:
    """Management commands as subprocesses; jobs' child tools write markers to ``marker_dir``."""

    def __init__(self, marker_dir: Path, extra_env: dict):
        self.marker_dir = marker_dir
        self.env = {
            **os.environ,
            **FAST_ENGINE,
            **database_env(),
            **extra_env,
            "DIAGNOSTIC_MARKER_DIR": str(marker_dir),
        }
        self.started: list[subprocess.Popen] = []

    def start(self, *args, **env) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started.append(process)
        return process

    def stop_all(self):
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def worker_processes(tmp_path):
    """Start workers with ``worker_processes.start("runcluster", ...)``; all stop after the
    test. Their jobs' markers land in ``tmp_path``."""
    purge_tickets()
    running = Processes(tmp_path, {})
    yield running
    running.stop_all()


def run_django(code: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process with BuildHub's settings read from ``env`` (the
    machine's DATABASE_URL and REDIS_URL left out) and its var/ in ``tmp_path``."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "buildhub.settings",
            "BUILDHUB_VAR_DIR": str(tmp_path),
            **env,
        },
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in (200, 503):
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in time")


class Stack:
    """daphne + the worker supervisor on the test database, as `make run` starts them."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
        self.env = {
            **inherited,
            **FAST_ENGINE,
            **database_env(),
            "DIAGNOSTIC_MARKER_DIR": str(tmp / "markers"),
            # A lease long enough that a loaded machine does not make live workers look lost.
            "JOB_LEASE_SECONDS": "15",
            "JOB_HEARTBEAT_SECONDS": "3",
            "DASHBOARD_REFRESH_SECONDS": "1",
            "WORKER_IDLE_SECONDS": "5",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        self.logs = tmp
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, *command: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            list(command),
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log = log
        self.processes.append(process)
        return process

    def up(self) -> "Stack":
        web = self.start(
            "daphne",
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "buildhub.asgi:application",
        )
        self.start("supervisor", sys.executable, "manage.py", "runworkers", "--clusters", "1")
        wait_until_up(f"{self.url}/healthz", web)
        return self

    def down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.log.close()


@contextlib.contextmanager
def running_stack(tmp: Path, **env: str) -> Iterator[Stack]:
    """A fresh stack for the block, its environment extended by ``env``."""
    purge_tickets()
    stack = Stack(tmp)
    stack.env.update(env)
    try:
        yield stack.up()
    finally:
        stack.down()
