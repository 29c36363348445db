"""What several benchmarks need: processes of our own, free ports, waiting, percentiles."""

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from buildhub.processes import terminate_all

LOG_DIR = Path("var/bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, seconds: float, what: str, poll: float = 0.005):
    """Poll ``predicate`` until it is true; raise (the benchmark fails) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"gave up waiting for {what} after {seconds:g}s")


def percentile(values, percent: int) -> float:
    """The ``percent``-th percentile (inclusive method: within the measured range)."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


@contextlib.contextmanager
def started(ctx, name: str, args: list[str], **env):
    """Run ``python <args>`` from the project directory with this process's environment
    (the benchmark database and Redis) for the duration of the block; output goes to
    ``var/bench/<name>.log``."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=settings.BASE_DIR,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ctx.log(f"started {name} (pid {process.pid}, log {log_path})")
        try:
            yield process
        finally:
            terminate_all([process], grace=30)
            ctx.log(f"stopped {name}")


def row(name, value, unit, target=None, ok=None) -> dict:
    return {"name": name, "value": float(value), "unit": unit, "target": target, "ok": ok}
