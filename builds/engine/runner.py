"""Running a claimed job inside a worker process: the dispatch ticket's work.

A ticket claims the best eligible job, runs its executor with a ``JobContext`` in a fresh
workspace while this process's monitor thread watches the lease, and ends the job in the
state its outcome calls for. The pieces live beside this module: ``context`` (what an
executor gets), ``subprocesses`` (each step's child process), ``monitor`` (the lease, cancel,
drain and timeout), ``workspaces`` and ``exceptions``.
"""

import logging
import os
import socket
import time
import traceback

from django.db import IntegrityError, close_old_connections

from buildhub import logs
from buildhub.storage import StorageUnavailable
from builds import metrics, registry
from builds.choices import LogLevel, WorkerState
from builds.engine import lifecycle, sandbox
from builds.engine.claim import take_next_job
from builds.engine.context import JobContext, StopReason
from builds.engine.exceptions import JobFailed, JobStopped, RetryableError, WorkerDraining
from builds.engine.monitor import process_monitor
from builds.engine.tickets import issue_ticket
from builds.engine.workspaces import make_workspace
from builds.models import Job, Worker

logger = logging.getLogger("buildhub.jobs")


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
    except (RetryableError, StorageUnavailable) as failure:
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
