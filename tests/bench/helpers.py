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


def listening_socket() -> socket.socket:
    """A loopback socket on a free port that child processes can inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def daphne_on_socket(fd: int) -> list[str]:
    """The command for a daphne serving the inherited listening socket ``fd``.

    Handed over with the systemd socket-activation protocol (fd 3, ``LISTEN_FDS``/
    ``LISTEN_PID``, Twisted's ``systemd:`` endpoint), so several daphne processes can serve
    one port: the kernel gives each new connection to whichever accepts first, and no proxy
    process takes a share of the cores.
    """
    return [
        "bash",  # POSIX sh redirects only single-digit descriptors
        "-c",
        f"exec 3<&{fd}; export LISTEN_FDS=1 LISTEN_FDNAMES=http LISTEN_PID=$$; "
        f"exec {sys.executable} -m daphne -e systemd:domain=INET:index=0 "
        "buildhub.asgi:application",
    ]


# Every benchmark client connects from 127.0.0.1, where a real fleet comes from as many
# addresses as it has devices: the per-address device limit would refuse most of the load.
WEB_ENV = {"DEVICE_RATE_PER_IP": "1000000000/m"}


@contextlib.contextmanager
def started_web(ctx, name: str, processes: int, env: dict | None = None):
    """``processes`` daphne processes serving one loopback port for the duration of the
    block; yields the port and the processes. Output goes to ``var/bench/<name>.log``."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with listening_socket() as sock, open(log_path, "w") as log:
        fd = sock.fileno()
        servers = [
            subprocess.Popen(
                daphne_on_socket(fd),
                pass_fds=(fd,),
                cwd=settings.BASE_DIR,
                env={**os.environ, **WEB_ENV, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for _ in range(processes)
        ]
        ctx.log(f"started {name}: {processes} daphne on one socket (log {log_path})")
        try:
            yield sock.getsockname()[1], servers
        finally:
            terminate_all(servers, grace=30)
            ctx.log(f"stopped {name}")


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
