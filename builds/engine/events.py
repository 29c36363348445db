"""What the engine tells the rest of the world, always after the database commit."""

import asyncio
import logging
import os
import threading

import django.dispatch
import redis
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from channels_redis.core import RedisChannelLayer
from django.db import transaction

from buildhub.internals import channel_group_location

logger = logging.getLogger("buildhub.jobs")

# Sent after commit with sender=Job, job=<Job>, outcome=<status or "retrying">.
job_completed = django.dispatch.Signal()  # succeeded
job_failed = django.dispatch.Signal()  # failed, timed_out, cancelled (terminal, not success)
job_error = django.dispatch.Signal()  # an attempt failed and the job goes back to the queue


def job_group(job_id) -> str:
    return f"job.{job_id}"


PUSH_TIMEOUT_SECONDS = 5


class _GroupSizes:
    """ZCARD of group keys on one Redis host, over one connection of its own kept open: no
    pool to take it from and no retry wrapper around each ask (a worker asks twice a job)."""

    def __init__(self, address: str, options: dict):
        pool = redis.ConnectionPool.from_url(address, **options)
        self._connection = pool.make_connection()
        self._lock = threading.Lock()

    def size(self, key: bytes) -> int:
        with self._lock:
            try:
                self._connection.send_command("ZCARD", key)
                return self._connection.read_response()
            except BaseException:
                self._connection.disconnect()  # the next ask connects again
                raise


class _PushLoop:
    """One event loop thread per process that sends every push, in order, with a channel
    layer of its own.

    ``async_to_sync`` would start a new loop for each event, and the channel layer a new
    Redis connection with it (about 4 ms a push); this loop keeps its connections. The
    layer is not the process's shared one, whose locks belong to the loop that serves
    websockets (daphne's).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._layer = None
        self._pid = 0
        self._groups: dict[int, _GroupSizes | None] = {}

    def start(self):
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # none yet, or we forked
                self._layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
                self._groups = {}
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._loop.run_forever, name="job-event-push", daemon=True
                ).start()
            return self._loop, self._layer

    def watched(self, group: str) -> bool:
        """Whether the group may have members: one ZCARD on the layer's own key, from this
        thread, instead of a group send through the loop (which costs ten times as much and
        finds nobody for most jobs). Only for a Redis layer on plain hosts; any other layer
        is always sent to.

        Skipping a group without members loses nothing: a websocket joins its group before
        it reads the job from the database, so one that joins after this look reads what
        was committed before it.
        """
        _, layer = self.start()
        if not isinstance(layer, RedisChannelLayer):
            return True
        where = channel_group_location(layer, group)
        with self._lock:
            if where.host_index not in self._groups:
                host = dict(layer.hosts[where.host_index])
                address = host.pop("address", None)
                self._groups[where.host_index] = _GroupSizes(address, host) if address else None
            sizes = self._groups[where.host_index]
        return sizes is None or sizes.size(where.key) > 0

    def send(self, group: str, message: dict) -> None:
        loop, layer = self.start()
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        try:
            future.result(PUSH_TIMEOUT_SECONDS)
        except BaseException:
            future.cancel()
            raise


_push_loop = _PushLoop()


def push(job_id, *messages: dict) -> None:
    """Send events to the job's websocket group, in order; one look first whether anyone
    watches it. A Redis outage only costs live updates."""
    if not messages or DEFAULT_CHANNEL_LAYER not in channel_layers.configs:
        return
    group = job_group(job_id)
    try:
        if _push_loop.watched(group):
            for message in messages:
                _push_loop.send(group, {"type": "job.event", **message})
    except Exception:  # clients resync from the database on reconnect
        events = ", ".join(sorted({message.get("event", "?") for message in messages}))
        logger.warning("could not push %s for job %s", events, job_id, exc_info=True)


def push_on_commit(job_id, *messages: dict) -> None:
    transaction.on_commit(lambda: push(job_id, *messages))


def status_message(job) -> dict:
    return {
        "event": "status",
        "job": str(job.pk),
        "status": job.status,
        "progress": job.progress,
        "stage": job.stage,
        "attempts": job.attempts,
        "error": job.error,
        "log_seq": job.log_seq,
        "state_seq": job.state_seq,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
