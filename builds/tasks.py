"""django-q2 entry points."""

from django.conf import settings

from builds.engine.runner import run_next_job as _run_next_job


def run_next_job():
    """A dispatch ticket: claim and run the best eligible jobs on this worker, one after
    another while there are any, for up to ``JOB_DRAIN_SECONDS``."""
    return _run_next_job(drain_seconds=settings.JOB_DRAIN_SECONDS)
