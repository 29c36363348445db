"""The monitor thread: one per worker process, it looks at every job running there, renews
its lease and tells it to stop on cancel, drain, timeout or a lost lease; it also flushes the
jobs' log batches. Once a lease is lost nothing more is written for that job."""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.context import JobContext, StopReason
from builds.models import Job

logger = logging.getLogger("buildhub.jobs")


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
                except Exception:  # a failing look must not leave a job unwatched
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

    def watch(self, context: JobContext, renew: bool) -> None:
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
