"""Small builders for engine tests."""

import datetime as dt
import uuid

from django.conf import settings
from django.utils import timezone

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


def held_lease(worker_id="test-worker", lease_token=None) -> dict:
    """What a claim gives a job it makes running (a worker, a lease token and its expiry),
    for tests that make a job running by hand: the database refuses one without them."""
    return {
        "worker": worker(worker_id),
        "lease_token": lease_token or uuid.uuid4(),
        "lease_expires_at": timezone.now() + dt.timedelta(seconds=settings.JOB_LEASE_SECONDS),
    }


def running(account):
    return Job.objects.filter(account=account, status=JobStatus.RUNNING).count()


def sleep_job(account, marker: str, seconds=0.6, steps=3, **options):
    """A diagnostic job whose child tool sleeps in ``steps`` and writes ``marker``."""
    params = {"seconds": seconds, "steps": steps, "marker": marker}
    return submit_job(account, "diagnostic.sleep", params, staff=True, **options)[0]
