"""Dispatch tickets: django-q2 tasks that make a worker claim the best job at that moment.

A ticket names no job, and the worker process that takes one claims job after job until
nothing is eligible. So a ticket sent after a job is queued is needed only when the broker
does not already hold one for every worker process: a ticket that waits there is taken after
the job was committed, and its worker claims the job unless another did first. Beyond that,
more tickets would only find the queue empty (and cost each worker a round of the broker and
a query), so none is sent. The reconciler (``workers.reconcile_tickets``) tops tickets up
from the database, so a Redis outage delays jobs but loses none.
"""

import logging
import os

from django.conf import settings
from django_q.brokers import get_broker
from django_q.tasks import async_task

from buildhub.internals import django_q_redis_settings

logger = logging.getLogger("buildhub.jobs")

TICKET_TASK = "builds.tasks.run_next_job"

_brokers: dict = {}


def ticket_broker():
    """This process's broker: django-q2 makes a new one, with a new Redis connection, for
    every task it is not handed (about 5 ms a ticket). A forked worker makes its own."""
    key = (os.getpid(), str(django_q_redis_settings()))
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
    except Exception:  # broker down: the reconciler re-issues later
        logger.warning("could not send a dispatch ticket; the reconciler will", exc_info=True)
    return sent


def tickets_ahead() -> int:
    """How many waiting tickets make another pointless: one per process of a cluster. (The
    broker's list grows only once every cluster's pusher holds all the tickets it takes in
    advance, so all the processes are busy then and each claims again when its job ends.)"""
    return max(1, settings.Q_CLUSTER["workers"])


def wake_workers() -> bool:
    """After a job is queued (on commit): send a ticket unless enough wait already (see the
    module's note). Returns whether one was sent."""
    try:
        if tickets_waiting() >= tickets_ahead():
            return False
    except Exception:  # noqa: BLE001 - broker down: issue_ticket warns, the reconciler sends
        pass
    return issue_ticket() == 1


def tickets_waiting() -> int:
    return ticket_broker().queue_size()
