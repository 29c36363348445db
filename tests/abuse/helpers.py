"""Builders for abuse tests: accounts of a given age, submissions and built bundles."""

import datetime as dt
import hashlib
import uuid

from django.utils import timezone

from abuse.models import AbuseSignal
from abuse.services import record_bundle, record_submission, score_account
from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.submit import submit_job
from builds.models import Account, Job
from tests.builds.engine_helpers import BUILD_KIND, held_lease
from tests.support.accounts import make_account

FARM_IP = "203.0.113.50"


def bundle_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def account(name: str, *, created_days_ago: int = 0, tier: str = "free") -> Account:
    created = make_account(tier, name)
    if created_days_ago:
        created.created_at = timezone.now() - dt.timedelta(days=created_days_ago)
        Account.objects.filter(pk=created.pk).update(created_at=created.created_at)
    return created


def signal(target: Account, *, ip=None, app_name="", minutes_ago=0, days_ago=0, bundle=""):
    """Record a submission (and a built bundle) as if it happened that long ago."""
    when = timezone.now() - dt.timedelta(minutes=minutes_ago, days=days_ago)
    record_submission(target, ip=ip, app_name=app_name, now=when)
    if bundle:
        job = Job.objects.create(
            kind=BUILD_KIND, account=target, priority_class="P3", timeout_seconds=60
        )
        AbuseSignal.objects.filter(pk=record_bundle(job, bundle).pk).update(created_at=when)


def rescore(target: Account):
    target.refresh_from_db()
    return score_account(target)


def rule_points(assessment) -> dict[str, int]:
    return {hit.rule.value: hit.points for hit in assessment.hits}


def submit_build(target: Account, *, ip=FARM_IP, app_name="Torch Light"):
    """A build submission through the engine's one door, as an API request makes it."""
    target.refresh_from_db()
    job, _ = submit_job(
        target, BUILD_KIND, {"app": "torch"}, request_meta={"ip": ip, "app_name": app_name}
    )
    return job


def complete_build(job: Job, bundle: str, capture) -> Job:
    """Run the job's real completion: claimed state, then succeed_job and its signal."""
    token = uuid.uuid4()
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        started_at=timezone.now(),
        attempts=1,
        **held_lease(lease_token=token),
    )
    with capture(execute=True):
        lifecycle.succeed_job(job.pk, token, {"bundle_sha256": bundle, "bundle_size": 1234})
    return Job.objects.get(pk=job.pk)
