"""Supervising a step's child process: it runs in a process group of its own, its output is
read line by line, and when the job must stop the whole group is stopped (SIGTERM, then
SIGKILL after a grace period) so that no grandchild outlives the step."""

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def kill_process_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's whole group, SIGKILL after ``grace`` seconds; reap the child."""
    signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    signal_group(process.pid, signal.SIGKILL)  # and anything the child left behind
    process.wait()


def start_child(command: list[str], *, cwd, env, **popen_kwargs) -> subprocess.Popen:
    """Start ``command`` in a new session (its own process group), with no input and its
    standard error merged into its output, read as text."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        **popen_kwargs,
    )


def supervise(
    process: subprocess.Popen,
    *,
    on_line: Callable[[str], None],
    must_stop: Callable[[], bool],
    grace: float,
) -> int:
    """Hand each line of the child's output to ``on_line`` until it exits, or stop its group
    as soon as ``must_stop()`` says so (asked at least every 0.1 s). Returns the exit code;
    nothing of the group is left running."""
    lines: queue.Queue = queue.Queue()
    output = process.stdout
    assert output is not None, "the process must be started with stdout=PIPE"

    def read():
        for line in output:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    finished_output = False
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
        if line is None:
            finished_output = True
        elif line:
            on_line(line)
        if must_stop():
            kill_process_group(process, grace)
            break
        if finished_output and process.poll() is not None:
            break
    returncode = process.wait()
    signal_group(process.pid, signal.SIGKILL)  # grandchildren must not outlive the step
    reader.join(timeout=5)
    output.close()
    return returncode
