"""What the engine tells the rest of the world, always after the database commit."""

import logging

import django.dispatch
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger("buildhub.jobs")

# Sent after commit with sender=Job, job=<Job>, outcome=<status or "retrying">.
job_completed = django.dispatch.Signal()  # succeeded
job_failed = django.dispatch.Signal()  # failed, timed_out, cancelled (terminal, not success)
job_error = django.dispatch.Signal()  # an attempt failed and the job goes back to the queue


def job_group(job_id) -> str:
    return f"job.{job_id}"


def push(job_id, message: dict) -> None:
    """Send one event to the job's websocket group; a Redis outage only costs live updates."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(job_group(job_id), {"type": "job.event", **message})
    except Exception:  # noqa: BLE001 - clients resync from the database on reconnect
        logger.warning("could not push %s for job %s", message.get("event"), job_id, exc_info=True)


def push_on_commit(job_id, message: dict) -> None:
    transaction.on_commit(lambda: push(job_id, message))


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
    }
