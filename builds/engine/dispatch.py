"""Dispatch tickets: django-q2 tasks that make a worker claim the best job at that moment.

A ticket names no job. Tickets are sent after commit when a job is queued and when a job
ends (a slot frees up); the reconciler tops them up from the database, so a Redis outage
delays jobs but loses none.
"""

import logging
import os

from django.db.models import Q
from django.db.models.functions import Now
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.tasks import async_task

from builds.choices import JobStatus
from builds.models import Job

logger = logging.getLogger("buildhub.jobs")

TICKET_TASK = "builds.tasks.run_next_job"

_brokers: dict = {}


def ticket_broker():
    """This process's broker: django-q2 makes a new one, with a new Redis connection, for
    every task it is not handed (about 5 ms a ticket). A forked worker makes its own."""
    key = (os.getpid(), str(Conf.REDIS))
    if key not in _brokers:
        _brokers.clear()
        _brokers[key] = get_broker()
    return _brokers[key]


def issue_ticket(count: int = 1) -> int:
    """Send ``count`` tickets; returns how many reached the broker."""
    sent = 0
    try:
        for _ in range(count):
            async_task(TICKET_TASK, save=False, broker=ticket_broker())
            sent += 1
    except Exception:  # noqa: BLE001 - broker down: the reconciler re-issues later
        logger.warning("could not send a dispatch ticket; the reconciler will", exc_info=True)
    return sent


def eligible_queued_count() -> int:
    return (
        Job.objects.filter(status=JobStatus.QUEUED, account__blocked=False)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=Now()))
        .count()
    )


def tickets_waiting() -> int:
    return ticket_broker().queue_size()


def reconcile_tickets(capacity: int | None = None) -> int:
    """Make sure every job that could run now has a ticket waiting; returns tickets sent."""
    wanted = eligible_queued_count()
    if capacity is not None:
        wanted = min(wanted, capacity)
    try:
        waiting = tickets_waiting()
    except Exception:  # noqa: BLE001
        logger.warning("broker unreachable; cannot reconcile tickets now")
        return 0
    missing = wanted - waiting
    return issue_ticket(missing) if missing > 0 else 0
