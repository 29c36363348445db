"""Diagnostic job kinds (staff and test use).

``diagnostic.noop`` does nothing in the worker itself: what it costs is the engine's own
overhead (claim, workspace, lease monitor, finish), which the benchmarks measure.

``diagnostic.sleep``: a real child process that sleeps in steps.

Params: ``seconds`` (total, default 1), ``steps`` (default 1), ``fail_times`` (the first N
attempts end with a retryable error), ``exit`` (the child exits with this code: a
non-retryable failure), ``marker`` (a file name under DIAGNOSTIC_MARKER_DIR where the child
appends ``start``/``end`` lines with times and its pid, to prove when it ran).
"""

import sys
from pathlib import Path

from django.conf import settings

from builds.engine.exceptions import JobFailed, RetryableError

CHILD = r"""
import os, sys, time
seconds, steps, code, marker, job, attempt = (
    float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
def mark(what):
    if marker:
        with open(marker, "a") as f:
            f.write(f"{what} {time.time():.6f} {job} {attempt} {os.getpid()}\n")
mark("start")
for step in range(1, steps + 1):
    time.sleep(seconds / steps)
    print(f"step {step}/{steps}", flush=True)
mark("end")
sys.exit(code)
"""

MAX_SECONDS = 3600
MAX_STEPS = 1000


def _number(params, name, default, kind, low, high):
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise JobFailed(f"param {name!r} must be a number from {low} to {high}")
    return kind(value)


def marker_path(name: str) -> Path:
    directory = Path(settings.DIAGNOSTIC_MARKER_DIR).resolve()
    path = (directory / name).resolve()
    if path.parent != directory:
        raise JobFailed("param 'marker' must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    return path


def sleep_executor(context):
    params = context.params
    seconds = _number(params, "seconds", 1, float, 0, MAX_SECONDS)
    steps = _number(params, "steps", 1, int, 1, MAX_STEPS)
    fail_times = _number(params, "fail_times", 0, int, 0, 100)
    exit_code = _number(params, "exit", 0, int, 0, 255)
    marker = str(marker_path(params["marker"])) if params.get("marker") else ""

    def on_line(line):
        if line.startswith("step "):
            done, total = line.split()[1].split("/")
            context.progress(int(done) * 100 // int(total), f"step {done}/{total}")

    context.progress(0, f"sleeping {seconds:g}s in {steps} step(s)")
    returncode = context.run(
        [
            sys.executable,
            "-c",
            CHILD,
            seconds,
            steps,
            exit_code,
            marker,
            context.job.pk,
            context.job.attempts,
        ],
        on_line=on_line,
        check=False,
        trusted=True,  # the engine's own child, not a customer's code
    )
    if returncode != 0:
        raise JobFailed(f"diagnostic child exited with code {returncode}")
    if context.job.attempts <= fail_times:
        raise RetryableError(f"diagnostic failure {context.job.attempts} of {fail_times}")
    return {"slept_seconds": seconds, "steps": steps}


def noop_executor(context):
    return {}
