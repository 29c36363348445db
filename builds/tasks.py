"""django-q2 entry points."""

from builds.engine.runner import run_next_job as _run_next_job


def run_next_job():
    """A dispatch ticket: claim and run the best eligible job on this worker."""
    return _run_next_job()
