"""The periodic work of build events, run by the worker supervisor (``runworkers``)."""

import logging

from buildevents import notifications, services

logger = logging.getLogger("buildhub.buildevents")


def periodic_sweep() -> None:
    stale = services.sweep_stale_runs()
    mailed, attempted = notifications.flush_overdue()
    if stale or mailed or attempted:
        logger.info(
            "build events sweep: %s stale run(s), %s overdue e-mail(s), %s webhook attempt(s)",
            len(stale),
            mailed,
            attempted,
        )
