"""A production-like BuildHub on this machine for load runs.

A fresh PostgreSQL database and an emptied Redis database, ``BUILDHUB_ENV=production``
(DEBUG off, behind a TLS proxy whose ``X-Forwarded-Proto`` the load users send), one daphne
process per core and the worker supervisor (``runworkers``).

The daphne processes share one listening socket (tests.bench.helpers.daphne_on_socket).
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from buildhub.processes import terminate_all
from tests.bench.__main__ import prepare_database, prepare_redis
from tests.bench.helpers import daphne_on_socket, listening_socket

BASE_DIR = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/buildhub_load"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
UNLIMITED = "1000000/m"  # per-token and per-account budgets, out of the way of the load


# Settings of the load stack (and of this process, which seeds it).
def stack_environment(database_url: str, redis_url: str, var_dir: Path) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "buildhub.settings",
        "BUILDHUB_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BUILDHUB_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        # The product's rate limits would answer most of the load with 429: raised for it.
        "API_RATE_LIMIT": UNLIMITED,
        "JOBS_SUBMIT_RATE": UNLIMITED,
        "JOBS_READ_RATE": UNLIMITED,
        "BUILD_EVENTS_RATE_LIMIT": UNLIMITED,
        # Every simulated device connects from 127.0.0.1, where a real fleet comes from as
        # many addresses as devices (or carrier NATs of thousands): the per-address device
        # limit is raised for that reason only. The per-app one keeps the product's default.
        "DEVICE_RATE_PER_IP": UNLIMITED,
    }


class Stack:
    def __init__(self, *, database_url: str, redis_url: str, var_dir: Path, web_processes: int):
        self.database_url, self.redis_url = database_url, redis_url
        self.var_dir, self.web_processes = var_dir, web_processes
        self.children: list[subprocess.Popen] = []
        self.sock: socket.socket | None = None
        self.output = None
        self.env = stack_environment(database_url, redis_url, var_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def prepare(self, log) -> dict:
        """Fresh database and Redis, migrations and seed data; returns the seed."""
        shutil.rmtree(self.var_dir, ignore_errors=True)
        self.var_dir.mkdir(parents=True)
        prepare_database(self.database_url)
        prepare_redis(self.redis_url)
        log(f"database {self.database_url} dropped and created; redis {self.redis_url} emptied")
        os.environ.update(self.env)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        from tests.load.seed import seed

        data = seed()
        from django.db import connections

        connections.close_all()  # the stack's processes open their own
        log("migrated and seeded")
        return data

    def start(self, log) -> None:
        self.sock = listening_socket()
        fd = self.sock.fileno()
        # The children's log, open as long as they run (closed in stop()).
        self.output = output = open(self.var_dir / "stack.log", "ab")  # noqa: SIM115
        env = {**os.environ, **self.env}
        for _ in range(self.web_processes):
            self.children.append(
                subprocess.Popen(
                    daphne_on_socket(fd),
                    pass_fds=(fd,),
                    env=env,
                    cwd=BASE_DIR,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
        self.children.append(
            subprocess.Popen(
                [sys.executable, str(BASE_DIR / "manage.py"), "runworkers"],
                env=env,
                cwd=BASE_DIR,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        )
        self._wait_healthy()
        log(f"{self.web_processes} daphne processes on {self.url} and the worker supervisor up")

    def warm_up(self, seed: dict, log, rounds: int = 20) -> None:
        """A few requests per web process on fresh connections, as a readiness probe of a
        deploy would, so the run measures a warm stack rather than each process's imports."""
        app = seed["app"]
        query = f"app={app['slug']}&platform=android&runtime_version={app['runtime_version']}"
        artifact = seed["bundles"]["android"]["artifact"]
        paths = [f"/api/v1/updates/check?{query}", f"/api/v1/bundles/{artifact}/", "/healthz"]
        headers = {"X-App-Key": app["app_key"], "X-Forwarded-Proto": "https"}
        for _ in range(rounds * self.web_processes):
            for path in paths:
                request = urllib.request.Request(self.url + path, headers=headers)
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
        log(f"warmed up ({rounds * self.web_processes * len(paths)} requests)")

    def _wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            exited = [child for child in self.children if child.poll() is not None]
            if exited:
                raise SystemExit(f"a stack process exited early; see {self.var_dir}/stack.log")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if json.loads(response.read())["status"] == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"the stack did not become healthy; see {self.var_dir}/stack.log")

    def stop(self) -> None:
        terminate_all(self.children, grace=30.0)
        self.children = []
        if self.sock is not None:
            self.sock.close()
        if self.output is not None:
            self.output.close()
