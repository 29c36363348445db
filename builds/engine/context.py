"""The job context: what an executor is handed to do its work (params, a workspace, logging,
progress, secrets, and ``run`` for each step), and how a job is told to stop."""

import logging
import os
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

from builds.choices import LogLevel
from builds.engine import lifecycle, sandbox
from builds.engine.exceptions import JobFailed, JobStopped
from builds.engine.logs import LogBuffer
from builds.engine.subprocesses import start_child, supervise
from builds.engine.workspaces import SANDBOX_DIR, workspace_root
from builds.models import Job

logger = logging.getLogger("buildhub.jobs")


class StopReason:
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"


class JobContext:
    """What an executor gets: params, a workspace, logging, progress and ``run``."""

    def __init__(self, job: Job, workspace: Path):
        self.job = job
        self.params = job.params or {}
        self.workspace = workspace
        self.lease_token = job.lease_token
        self.secrets: set[str] = set()
        self.logs = LogBuffer(job.pk, job.lease_token, self.secrets)
        self.deadline = time.monotonic() + job.timeout_seconds
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self._sandbox: sandbox.Sandbox | None = None

    # --- reporting -------------------------------------------------------------------
    def add_secret(self, value: str) -> None:
        """Values redacted from every log line of this job (tokens, passwords...)."""
        if value:
            self.secrets.add(str(value))

    def log(self, message: str, level: str = LogLevel.INFO) -> None:
        self.logs.add(message, level)

    def progress(self, percent: int | None = None, stage: str | None = None) -> None:
        try:
            self.logs.flush()  # lines written before a stage change come before it
            leased = lifecycle.set_progress(self.job.pk, self.lease_token, percent, stage)
        except DatabaseError:
            # The database is briefly away (a restart, a failover): this update is skipped,
            # the lines stay buffered, and the monitor decides whether the lease can be held.
            logger.warning("job %s: progress not saved, the database is unavailable", self.job.pk)
            connection.close()
            return
        if not leased:
            self.stop(StopReason.LEASE_LOST)
            self.check()

    # --- stopping --------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            self.stop(StopReason.TIMED_OUT)
        if self.stop_event.is_set():
            raise JobStopped(self.stop_reason)

    def sleep(self, seconds: float) -> None:
        self.stop_event.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))
        self.check()

    def must_stop(self) -> bool:
        """Whether the job must stop now (its deadline passed, or it was told to)."""
        if time.monotonic() >= self.deadline:
            self.stop(StopReason.TIMED_OUT)
        return self.stop_event.is_set()

    # --- external tools --------------------------------------------------------------
    def sandbox(self) -> "sandbox.Sandbox":
        """The job's sandbox, opened on first use (a user id is taken for the job then)."""
        if self._sandbox is None:
            try:
                self._sandbox = sandbox.Sandbox(
                    self.workspace, self.job.account_id, workspace_root() / SANDBOX_DIR
                ).open()
            except sandbox.SandboxUnavailable as problem:
                logger.error("job %s: no sandbox on this worker: %s", self.job.pk, problem)
                raise JobFailed(
                    "This worker cannot run build steps in its sandbox, so the build was not "
                    f"run (an operator must fix the worker): {problem}"
                ) from None
        return self._sandbox

    def step_path(self, path: Path, inside: str) -> str:
        """Where a step sees ``path`` when it is given as ``writable=[(path, inside)]``."""
        return inside if sandbox.enabled() else str(path)

    def run(
        self,
        args,
        *,
        env=None,
        cwd=None,
        on_line=None,
        check=True,
        network=False,
        writable=(),
        readable=(),
        trusted=False,
    ) -> int:
        """Run a step in its own process group, logging its output line by line.

        A step runs in the job's sandbox (``builds.engine.sandbox``): its environment is the
        sandbox's allow-list plus ``env``, it sees the workspace and the ``writable`` paths
        (or ``(path, inside)`` pairs: see ``step_path``) writable, ``readable`` and the system
        read-only, and has no network unless ``network``. ``trusted`` steps (the engine's own
        programs, never a customer's) run as plain children with the worker's environment plus
        ``env``.

        Stops it (SIGTERM to the group, SIGKILL after the grace period) on timeout, cancel,
        drain or a lost lease, then raises JobStopped. A step that reached a sandbox limit
        raises JobFailed naming it; any other non-zero exit raises JobFailed with ``check``.
        """
        self.check()
        args = [str(arg) for arg in args]
        cwd = cwd or self.workspace
        extra = {}
        limit_watch = sandbox.LimitWatch()
        if trusted:
            child_env = {**os.environ, **env} if env is not None else None
            extra["preexec_fn"] = sandbox.die_with_parent
            command = args
        elif sandbox.enabled():
            box = self.sandbox()
            child_env = sandbox.step_environment(self.workspace, env, args[0])
            try:
                command = box.command(
                    args, cwd=cwd, network=network, writable=writable, readable=readable
                )
            except sandbox.SandboxUnavailable as problem:
                raise JobFailed(f"This step cannot run in the sandbox: {problem}") from None
            extra.update(box.popen_kwargs())
        else:  # BUILD_SANDBOX=off: a plain child, still with only the allow-listed environment
            refusal = sandbox.mode_refusal()
            if refusal:
                raise JobFailed(refusal)
            child_env = sandbox.step_environment(self.workspace, env, args[0])
            extra["preexec_fn"] = sandbox.limits_setter()
            command = args

        def take_line(line: str) -> None:
            self.log(line)
            limit_watch(line)
            if on_line is not None:
                on_line(line)

        process = start_child(command, cwd=cwd, env=child_env, **extra)
        returncode = supervise(
            process,
            on_line=take_line,
            must_stop=self.must_stop,
            grace=settings.JOB_KILL_GRACE_SECONDS,
        )
        self.check()
        name = Path(args[0]).name
        limit = None if trusted else limit_watch.reached(returncode)
        if limit is not None:
            raise JobFailed(f"{name} was stopped by {limit.describe()}")
        if check and returncode != 0:
            raise JobFailed(f"{name} exited with code {returncode}")
        return returncode
