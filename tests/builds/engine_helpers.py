"""Small builders for engine tests."""

from builds import registry
from builds.choices import JobStatus
from builds.engine.submit import submit_job
from builds.models import Job, Worker

BUILD_KIND = "test.build"


def _build_executor(context):
    return {"built": True}


registry.register_kind(BUILD_KIND, _build_executor, description="A build-counting test kind.")


def queue_jobs(account, count=1, kind="diagnostic.sleep", params=None, **options):
    return [
        submit_job(account, kind, params or {"seconds": 0}, staff=True, **options)[0]
        for _ in range(count)
    ]


def worker(worker_id="test-worker", processes=1):
    return Worker.objects.get_or_create(
        pk=worker_id, defaults={"host": "test", "pid": 1, "processes": processes}
    )[0]


def running(account):
    return Job.objects.filter(account=account, status=JobStatus.RUNNING).count()


def sleep_job(account, marker: str, seconds=0.6, steps=3, **options):
    """A diagnostic job whose child tool sleeps in ``steps`` and writes ``marker``."""
    params = {"seconds": seconds, "steps": steps, "marker": marker}
    return submit_job(account, "diagnostic.sleep", params, staff=True, **options)[0]
