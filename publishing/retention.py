"""What publishing keeps of the past: the jobs its rows need, and check-ins for so long.

- Jobs: the retention sweep (builds.retention) keeps a job past JOB_RETENTION_DAYS while a
  version lists it among its builds, a release names it as its publish job, or an artifact
  it made is not deleted yet: they are what devices run and how they were made. An artifact
  deleted by its expiry sweep keeps its row with its job set to null once the job goes.
- Check-ins (publishing.checkins): device rows not seen, hourly counters older, and device
  outcomes first seen more than CHECKIN_RETENTION_DAYS ago are deleted, in batches of
  CHECKIN_PRUNE_BATCH rows, but never what release health reads: the window is at least
  RELEASE_HEALTH_WINDOW_DAYS, and the device outcomes of each environment's current release
  (its failure rate, which may halt or roll it back) stay whatever their age.
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from publishing.choices import Environment
from publishing.models import (
    App,
    Artifact,
    DeviceCheckin,
    Release,
    ReleaseCheckinCount,
    ReleaseDevice,
    Version,
)

CHECKIN_PRUNE_BATCH = 5000
RELEASE_CHUNK = 500


def jobs_still_needed(job_ids) -> set:
    """Those of ``job_ids`` that versions, releases or live artifacts name (one query)."""
    versions = Version.builds.through.objects.filter(job_id__in=job_ids)
    releases = Release.objects.filter(job_id__in=job_ids)
    artifacts = Artifact.objects.filter(job_id__in=job_ids, deleted_at__isnull=True)
    named = [rows.order_by().values_list("job_id") for rows in (versions, releases, artifacts)]
    return {job_id for (job_id,) in named[0].union(*named[1:])}


@dataclass
class PruneResult:
    devices: int = 0
    counters: int = 0
    outcomes: int = 0
    days: int = 0

    def __str__(self):
        return (
            f"{self.devices} device row(s), {self.counters} hourly counter(s) and "
            f"{self.outcomes} device outcome(s) older than {self.days} days deleted"
        )


def _delete_in_batches(rows, batch: int) -> int:
    deleted = 0
    while True:
        ids = list(rows.order_by().values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += rows.model.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            return deleted


def current_releases():
    """Each app environment's current release: the newest one not rolled back."""
    newest = Release.objects.filter(
        app=OuterRef("app"), env=OuterRef("env"), rolled_back_at__isnull=True
    ).order_by("-published_at", "-id")
    return Release.objects.filter(pk=Subquery(newest.values("pk")[:1]))


def prune_checkins(
    *, days: int | None = None, now: dt.datetime | None = None, batch: int | None = None
) -> PruneResult:
    """Delete check-in history older than ``days`` (CHECKIN_RETENTION_DAYS, 0: keep it all;
    never less than RELEASE_HEALTH_WINDOW_DAYS)."""
    days = settings.CHECKIN_RETENTION_DAYS if days is None else days
    batch = batch or CHECKIN_PRUNE_BATCH
    if days <= 0:
        return PruneResult()
    days = max(days, settings.RELEASE_HEALTH_WINDOW_DAYS)
    before = (now or timezone.now()) - dt.timedelta(days=days)
    result = PruneResult(days=days)
    # Device rows per app environment: a range of device_checkin_recent (app, env, last_seen),
    # rather than an index of their own that every check-in batch would write.
    for app_id in App.objects.order_by("pk").values_list("pk", flat=True).iterator():
        for env in Environment.values:
            result.devices += _delete_in_batches(
                DeviceCheckin.objects.filter(app_id=app_id, env=env, last_seen__lt=before), batch
            )
    current = set(current_releases().values_list("pk", flat=True))
    release_ids = list(Release.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(release_ids), RELEASE_CHUNK):
        chunk = release_ids[start : start + RELEASE_CHUNK]
        result.counters += _delete_in_batches(
            ReleaseCheckinCount.objects.filter(release_id__in=chunk, hour__lt=before), batch
        )
        past = [pk for pk in chunk if pk not in current]
        result.outcomes += _delete_in_batches(
            ReleaseDevice.objects.filter(release_id__in=past, first_seen__lt=before), batch
        )
    return result


def periodic_prune():
    result = prune_checkins()
    return result if result.devices or result.counters or result.outcomes else None
