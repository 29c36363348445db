"""What publishing keeps of the past: the jobs its rows need, check-ins for so long."""

import datetime as dt

import pytest
from django.utils import timezone

from builds import retention as job_retention
from builds.choices import JobStatus
from builds.models import Job
from publishing import health, retention
from publishing.choices import ArtifactKind, DeviceOutcome, VersionStatus
from publishing.models import (
    Artifact,
    DeviceCheckin,
    Release,
    ReleaseCheckinCount,
    ReleaseDevice,
    Version,
)
from tests.builds.engine_helpers import queue_jobs

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def old_job(account, days=100):
    job = queue_jobs(account, 1)[0]
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, finished_at=ago(days))
    return job


def release(app, number, published_days_ago=0, job=None, env="production") -> Release:
    version = Version.objects.create(app=app, number=number, status=VersionStatus.PUBLISHED)
    return Release.objects.create(
        app=app,
        env=env,
        version=version,
        manifest_key=f"{env}/v{number}.json",
        published_at=ago(published_days_ago),
        job=job,
    )


def test_jobs_of_versions_releases_and_live_artifacts_stay(app, pro_account, settings):
    settings.JOB_ARCHIVE = False
    published_by = old_job(pro_account)
    built = old_job(pro_account)
    made_live_artifact = old_job(pro_account)
    made_deleted_artifact = old_job(pro_account)
    forgotten = old_job(pro_account)
    release(app, 1, job=published_by).version.builds.add(built)
    live = Artifact.objects.create(
        account=pro_account, app=app, job=made_live_artifact, kind=ArtifactKind.OTA_BUNDLE
    )
    expired = Artifact.objects.create(
        account=pro_account,
        app=app,
        job=made_deleted_artifact,
        kind=ArtifactKind.OTA_BUNDLE,
        deleted_at=ago(50),
    )

    result = job_retention.sweep_jobs()

    assert (result.jobs_deleted, result.jobs_kept) == (2, 3)
    assert set(Job.objects.values_list("pk", flat=True)) == {
        published_by.pk,
        built.pk,
        made_live_artifact.pk,
    }
    assert not Job.objects.filter(pk=forgotten.pk).exists()
    live.refresh_from_db()
    expired.refresh_from_db()
    assert live.job_id == made_live_artifact.pk
    assert expired.job_id is None  # the row stays, without the job it no longer needs


def test_old_check_ins_go_but_not_what_live_release_health_reads(app, settings):
    settings.CHECKIN_RETENTION_DAYS = 30
    settings.RELEASE_HEALTH_WINDOW_DAYS = 7
    old = release(app, 1, published_days_ago=200)
    live = release(app, 2, published_days_ago=100)
    for number, seen in enumerate((ago(40), ago(20), ago(1))):
        DeviceCheckin.objects.create(
            app=app,
            env="production",
            device_id=f"device-{number}",
            platform="android",
            protocol="buildhub",
            running_release=live,
            last_seen=seen,
        )
    for row, hours in ((old, (45, 2)), (live, (45, 2))):
        for days in hours:
            ReleaseCheckinCount.objects.create(release=row, hour=ago(days), checks=5)
    for row in (old, live):
        for number, days in enumerate((90, 3)):
            ReleaseDevice.objects.create(
                release=row,
                device_id=f"device-{number}",
                outcome=DeviceOutcome.FAILED if number else DeviceOutcome.INSTALLED,
                first_seen=ago(days),
            )
    before = health.release_health(app, "production", now=NOW)

    result = retention.prune_checkins(now=NOW)

    assert (result.devices, result.counters, result.outcomes) == (1, 2, 1)
    assert sorted(DeviceCheckin.objects.values_list("device_id", flat=True)) == [
        "device-1",
        "device-2",
    ]
    assert set(ReleaseCheckinCount.objects.values_list("release_id", flat=True)) == {
        old.pk,
        live.pk,
    }
    assert ReleaseDevice.objects.filter(release=live).count() == 2  # the live release's all
    assert ReleaseDevice.objects.filter(release=old).count() == 1
    after = health.release_health(app, "production", now=NOW)
    assert after["releases"][0] == before["releases"][0]  # the live release reads the same
    assert after["active_devices"] == before["active_devices"]


def test_the_health_window_is_never_pruned(app, settings):
    settings.CHECKIN_RETENTION_DAYS = 1
    settings.RELEASE_HEALTH_WINDOW_DAYS = 7
    row = release(app, 1)
    ReleaseCheckinCount.objects.create(release=row, hour=ago(5), checks=1)
    ReleaseCheckinCount.objects.create(release=row, hour=ago(8), checks=1)

    result = retention.prune_checkins(now=NOW)

    assert (result.days, result.counters) == (7, 1)
    assert ReleaseCheckinCount.objects.get().hour == ago(5)


def test_pruning_works_in_batches_and_twice_is_harmless(app, settings):
    settings.CHECKIN_RETENTION_DAYS = 30
    row = release(app, 1)
    ReleaseCheckinCount.objects.bulk_create(
        ReleaseCheckinCount(release=row, hour=ago(40) - dt.timedelta(hours=hour), checks=1)
        for hour in range(7)
    )

    assert retention.prune_checkins(now=NOW, batch=3).counters == 7
    assert retention.prune_checkins(now=NOW, batch=3).counters == 0
    assert retention.periodic_prune() is None


def test_zero_keeps_check_ins_forever(app, settings):
    settings.CHECKIN_RETENTION_DAYS = 0
    ReleaseCheckinCount.objects.create(release=release(app, 1), hour=ago(4000), checks=1)

    assert retention.prune_checkins().counters == 0
    assert ReleaseCheckinCount.objects.count() == 1
