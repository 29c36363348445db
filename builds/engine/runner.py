"""Running a claimed job inside a worker process.

The executor works in a fresh workspace and runs external tools as children in their own
process groups. A monitor thread renews the lease, watches for cancel, drain and timeout,
and flushes log batches; once the lease is lost the job's process group is stopped and
nothing more is written.
"""

import contextlib
import functools
import hashlib
import logging
import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connection,
    connections,
)
from django.utils import timezone

from buildhub import logs
from builds import metrics, registry
from builds.choices import JobStatus, LogLevel, WorkerState
from builds.engine import lifecycle, sandbox
from builds.engine.claim import WorkerDraining, take_next_job
from builds.engine.dispatch import issue_ticket
from builds.engine.logs import LogBuffer
from builds.models import Job, Worker

logger = logging.getLogger("buildhub.jobs")

WORKSPACE_PREFIX = "buildhub-job-"
SANDBOX_DIR = ".sandbox"  # under the workspace root: the /etc files of sandbox users


class RetryableError(Exception):
    """The attempt failed for a reason that may pass (network, a busy service)."""


class JobFailed(Exception):
    """The job cannot succeed as submitted; retrying would fail the same way."""


class JobStopped(Exception):
    """Raised inside the executor once the job must stop (cancel, timeout, lease, drain)."""


class StopReason:
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"


def installation_key() -> str:
    """Names this installation by its database: jobs of one database share a workspace root."""
    db = connections["default"].settings_dict
    return _key_of(f"{db['ENGINE']}:{db.get('HOST', '')}:{db.get('PORT', '')}:{db['NAME']}")


@functools.lru_cache(maxsize=8)
def _key_of(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def workspace_root() -> Path:
    """Where job workspaces live: ``JOB_WORKSPACE_ROOT``, else a folder of this installation
    on tmpfs (/dev/shm) or in the temporary directory. Per installation, so the sweep of one
    BuildHub never removes the workspaces of another on the same host."""
    if settings.JOB_WORKSPACE_ROOT:
        return Path(settings.JOB_WORKSPACE_ROOT)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"buildhub-{installation_key()}"


def make_workspace(job: Job) -> Path:
    root = workspace_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{job.pk}-", dir=root))


def sweep_workspaces() -> int:
    """Delete workspaces whose job is not running (left by a killed worker)."""
    root = workspace_root()
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.glob(f"{WORKSPACE_PREFIX}*"):
        job_id = path.name[len(WORKSPACE_PREFIX) :][:36]
        if not Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).exists():
            sandbox.remove_tree(path)
            removed += 1
    return removed


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
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            **extra,
        )
        lines: queue.Queue = queue.Queue()

        def read():
            for line in process.stdout:
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
                self.log(line)
                limit_watch(line)
                if on_line is not None:
                    on_line(line)
            if time.monotonic() >= self.deadline:
                self.stop(StopReason.TIMED_OUT)
            if self.stop_event.is_set():
                kill_process_group(process, settings.JOB_KILL_GRACE_SECONDS)
                break
            if finished_output and process.poll() is not None:
                break
        returncode = process.wait()
        signal_group(process.pid, signal.SIGKILL)  # grandchildren must not outlive the step
        reader.join(timeout=5)
        process.stdout.close()
        self.check()
        name = Path(args[0]).name
        limit = None if trusted else limit_watch.reached(returncode)
        if limit is not None:
            raise JobFailed(f"{name} was stopped by {limit.describe()}")
        if check and returncode != 0:
            raise JobFailed(f"{name} exited with code {returncode}")
        return returncode


class _Watch:
    """The monitor's state for one running job."""

    def __init__(self, context: JobContext):
        now = time.monotonic()
        self.context = context
        self.next_look = now + settings.JOB_POLL_SECONDS
        self.next_renewal = now + settings.JOB_HEARTBEAT_SECONDS
        # Until when the lease surely holds (the claim set it just before): renewals that
        # fail because the database is briefly away are retried until one heartbeat before.
        self.held_until = now + settings.JOB_LEASE_SECONDS - settings.JOB_HEARTBEAT_SECONDS


class Monitor(threading.Thread):
    """This process's monitor: every ``JOB_POLL_SECONDS`` it looks at each job running here,
    renews its lease when due and watches for cancel, drain and timeout.

    One thread for the process's life rather than one per job: a job too short to be
    looked at costs no thread, and adding or removing one does not wake the monitor (it
    wakes at least every ``JOB_POLL_SECONDS`` and finds new jobs then).
    """

    def __init__(self):
        super().__init__(daemon=True, name="job-monitor")
        self._changed = threading.Condition()
        self._watches: dict[int, _Watch] = {}
        self._looking: JobContext | None = None

    def add(self, context: JobContext) -> None:
        with self._changed:
            self._watches[id(context)] = _Watch(context)  # first look: one poll from now

    def remove(self, context: JobContext) -> None:
        """Stop watching ``context``; once this returns, no look at it is under way."""
        with self._changed:
            self._watches.pop(id(context), None)
            while self._looking is context:
                self._changed.wait()

    def run(self):
        while True:
            for watch in self._due():
                with self._changed:
                    if id(watch.context) not in self._watches:
                        continue  # the job ended meanwhile
                    self._looking = watch.context
                try:
                    self._look(watch)
                except Exception:  # noqa: BLE001 - a failing look must not leave a job unwatched
                    logger.exception(
                        "monitor of job %s failed; stopping the job", watch.context.job.pk
                    )
                    watch.context.stop(StopReason.LEASE_LOST)
                    connection.close()
                finally:
                    watch.next_look = time.monotonic() + settings.JOB_POLL_SECONDS
                    with self._changed:
                        self._looking = None
                        self._changed.notify_all()

    def _due(self) -> list[_Watch]:
        """Wait until at least one job is due for a look; returns those that are."""
        with self._changed:
            while True:
                now = time.monotonic()
                due = [watch for watch in self._watches.values() if watch.next_look <= now]
                if due:
                    return due
                timeout = settings.JOB_POLL_SECONDS
                if self._watches:
                    soonest = min(watch.next_look for watch in self._watches.values())
                    timeout = min(timeout, soonest - now)
                else:
                    connection.close()  # nothing to watch: hold no database connection
                self._changed.wait(timeout)

    def _look(self, watch: _Watch) -> None:
        context = watch.context
        renewing_at = time.monotonic()
        renew = renewing_at >= watch.next_renewal
        try:
            self.watch(context, renew=renew)
        except DatabaseError:
            connection.close()
            renew = False  # not renewed: try again at the next look
            if time.monotonic() >= watch.held_until:
                logger.warning("job %s: lease not renewed in time; stopping", context.job.pk)
                context.stop(StopReason.LEASE_LOST)
        if time.monotonic() >= context.deadline:
            context.stop(StopReason.TIMED_OUT)
        if renew:
            watch.held_until = (
                renewing_at + settings.JOB_LEASE_SECONDS - settings.JOB_HEARTBEAT_SECONDS
            )
            watch.next_renewal = time.monotonic() + settings.JOB_HEARTBEAT_SECONDS

    def watch(self, context: "JobContext", renew: bool) -> None:
        """One look at the job's row: lease, cancel, drain; renew the lease when due."""
        row = (
            Job.objects.filter(pk=context.job.pk)
            .values_list("status", "lease_token", "cancel_requested_at", "worker__drain_deadline")
            .first()
        )
        if row is None or row[0] != JobStatus.RUNNING or row[1] != context.lease_token:
            context.stop(StopReason.LEASE_LOST)
        elif row[2] is not None:
            context.stop(StopReason.CANCELLED)
        elif row[3] is not None and timezone.now() >= row[3]:
            context.stop(StopReason.RELEASED)
        if renew and not lifecycle.renew_lease(context.job.pk, context.lease_token):
            context.stop(StopReason.LEASE_LOST)
        if context.stop_reason != StopReason.LEASE_LOST:
            context.logs.flush()


_monitors: dict[int, Monitor] = {}
_monitors_lock = threading.Lock()


def process_monitor() -> Monitor:
    """This process's monitor thread, started on first use (after a fork, anew)."""
    with _monitors_lock:
        monitor = _monitors.get(os.getpid())
        if monitor is None or not monitor.is_alive():
            _monitors.clear()
            monitor = _monitors[os.getpid()] = Monitor()
            monitor.start()
        return monitor


def _finish(context: JobContext, result, error: str, retryable: bool) -> None:
    job, token = context.job, context.lease_token
    reason = context.stop_reason
    if reason == StopReason.LEASE_LOST:
        logger.warning("job %s lost its lease; its result is discarded", job.pk)
        metrics.lease_lost()
        return
    if reason is None and error:
        context.log(error, LogLevel.ERROR)
    with context.logs.flushing():  # no monitor batch may pass the last one
        lines = context.logs.take()  # written in the transaction that ends the lease
        if reason == StopReason.CANCELLED:
            lifecycle.finish_cancelled_job(job.pk, token, lines=lines)
        elif reason == StopReason.TIMED_OUT:
            lifecycle.time_out_job(job.pk, token, job.timeout_seconds, lines=lines)
        elif reason == StopReason.RELEASED:
            lifecycle.release_job(job.pk, token, lines=lines)
        elif error:
            lifecycle.fail_job(job.pk, token, error, retryable=retryable, lines=lines)
        else:
            lifecycle.succeed_job(job.pk, token, result, lines=lines)


def execute_claimed(job: Job) -> None:
    kind = registry.get_kind(job.kind)
    workspace = make_workspace(job)
    context = JobContext(job, workspace)
    monitor = process_monitor()
    monitor.add(context)
    result, error, retryable = None, "", False
    bound = logs.bind(job_id=job.pk, account_id=job.account_id)
    try:
        if kind is None:
            raise JobFailed(f"no executor for job kind {job.kind!r} on this worker")
        context.log(f"attempt {job.attempts} of {job.max_attempts} on {job.worker_id}")
        result = kind.execute(context)
        context.check()
    except JobStopped:
        pass
    except RetryableError as failure:
        error, retryable = str(failure) or "retryable failure", True
    except JobFailed as failure:
        error = str(failure) or "failed"
    except Exception as failure:  # noqa: BLE001 - an executor bug fails the job, not the worker
        error = f"{type(failure).__name__}: {failure}"
        context.log(traceback.format_exc(), LogLevel.ERROR)
    finally:
        monitor.remove(context)
        try:
            _finish(context, result, error, retryable)
        finally:
            sandbox.remove_tree(workspace)
            logs.unbind(bound)


def current_worker_id() -> str:
    """This process's worker: the runcluster that started it, or the process itself."""
    return os.environ.get("BUILDHUB_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


_registered: set[str] = set()


def ensure_registered(worker_id: str) -> None:
    """Register this process's worker once (runcluster registers its own; a plain qcluster's
    worker is registered by its first ticket), so claims can name it."""
    if worker_id in _registered:
        return
    host, _, rest = worker_id.partition(":")
    pid = rest.split(":")[0]
    Worker.objects.get_or_create(
        pk=worker_id,
        defaults={
            "host": host,
            "pid": int(pid) if pid.isdigit() else os.getpid(),
            "state": WorkerState.BUSY,
        },
    )
    _registered.add(worker_id)


def _take(worker_id: str) -> Job | None:
    try:
        return take_next_job(worker_id)
    except IntegrityError:  # the worker's row is gone (removed by hand): register it again
        _registered.discard(worker_id)
        ensure_registered(worker_id)
        return take_next_job(worker_id)


def run_next_job(drain_seconds: float = 0) -> str | None:
    """The dispatch ticket's work: claim the best eligible job and run it; returns its id.

    With ``drain_seconds``, keep claiming after each job until nothing is eligible or that
    long has passed: the slot a job frees is this process's own, so it claims again itself
    instead of sending a ticket that, on a busy queue, finds nothing (tickets of the jobs it
    takes meanwhile still wait, and wake other free processes). The claim order is the
    same: every claim is one turn of the shared cycle. When the loop stops for the time
    limit or because this worker drains, a ticket goes out for whoever is free.

    A ticket that finds nothing eligible costs one query that writes nothing; a worker
    that is draining is refused by the claim, and hands the ticket on when jobs wait.
    """
    close_old_connections()
    worker_id = current_worker_id()
    began = time.monotonic()
    first = None
    bound = logs.bind(worker_id=worker_id)
    try:
        ensure_registered(worker_id)
        while True:
            try:
                job = _take(worker_id)
            except WorkerDraining:
                metrics.claim_found_nothing("draining")
                issue_ticket()  # this worker is stopping: hand the ticket to another
                break
            if job is None:
                break
            first = first or str(job.pk)
            try:
                execute_claimed(job)
            except BaseException:
                issue_ticket()  # a slot is free: whoever waits for it gets a ticket
                raise
            if time.monotonic() - began >= drain_seconds:
                issue_ticket()  # as above; another process (or this one) takes it
                break
    finally:
        logs.unbind(bound)
        close_old_connections()
    return first
