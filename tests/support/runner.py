"""The job runner in the test process: a job kind whose tool leaves a grandchild, and
helpers to run the next job, look at its row and logs, and watch its processes."""

import os
import threading
import time

from django.db import connection

from builds import registry
from builds.engine.runner import run_next_job
from builds.engine.workspaces import WORKSPACE_PREFIX, workspace_root
from builds.models import Job, JobLog


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: it is not running
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def tree_executor(context):
    """A tool that starts a grandchild and then waits: both must die on timeout or cancel."""
    pid_file = context.workspace / "grandchild.pid"
    context.run(["sh", "-c", f"sleep 120 & echo $! > {pid_file}; echo started; wait"], trusted=True)


registry.register_kind("test.tree", tree_executor)


def run_one():
    return run_next_job()


def reload(job):
    return Job.objects.get(pk=job.pk)


def logs_of(job):
    return list(JobLog.objects.filter(job=job).order_by("seq").values_list("seq", "message"))


def grandchild_pid(job) -> int:
    for _ in range(100):
        for path in workspace_root().glob(f"{WORKSPACE_PREFIX}{job.pk}-*/grandchild.pid"):
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise AssertionError("the grandchild never started")


def run_in_thread():
    def target():
        try:
            run_next_job()
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread
