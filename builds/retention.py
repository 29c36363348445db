"""Retention: finished jobs and their logs do not pile up without bound.

A job that finished more than ``JOB_RETENTION_DAYS`` ago is written, with its log, to the
private storage (``archives/jobs/YYYY/MM/DD/<first id>-<last id>.jsonl.gz``, one JSON object
per line, unless ``JOB_ARCHIVE`` is off) and then deleted, ``JOB_RETENTION_BATCH`` jobs at a
time, oldest first, through the partial index ``job_finished`` (finished_at, id): each batch
reads only its own rows, and each delete is one short transaction of its own.

Jobs that other apps' rows still need stay (``registry.register_job_keeper``: publishing
keeps the jobs of versions, releases and artifacts not yet deleted); every other reference
follows its foreign key's ``on_delete`` (abuse signals and deleted artifacts lose their
job, as when a job is deleted by hand).

Several nodes may sweep at once: the archive is written before anything is deleted (outside
any transaction), and the delete locks only rows that are still finished, old and not
locked by anyone else (SKIP LOCKED), so a job retried meanwhile or taken by another sweep is
left alone. A shared-cache lock keeps the nodes from doing the same batches twice.
"""

import datetime as dt
import gzip
import io
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.storage import storages
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from builds import registry
from builds.choices import TERMINAL_STATES
from builds.models import Job, JobLog

logger = logging.getLogger("buildhub.retention")

ARCHIVE_PREFIX = "archives/jobs"
ARCHIVE_STORAGE = "private"  # job parameters and logs are the account's, never public
LOCK_KEY = "retention:jobs:sweeping"
LOG_FIELDS = ("seq", "ts", "level", "message")
SPOOL_BYTES = 8 * 1024 * 1024  # an archive larger than this goes through a temporary file


@dataclass
class SweepResult:
    jobs_deleted: int = 0
    logs_deleted: int = 0
    jobs_kept: int = 0  # old jobs that other rows still need
    batches: int = 0
    archives: list[str] = field(default_factory=list)
    complete: bool = True  # False: stopped by its time budget
    busy: bool = False  # another node was sweeping: this one did nothing
    seconds: float = 0.0

    def __str__(self):
        if self.busy:
            return "another node is sweeping finished jobs"
        text = (
            f"{self.jobs_deleted} finished job(s) and {self.logs_deleted} log line(s) deleted "
            f"in {self.batches} batch(es), {len(self.archives)} archive(s) written, "
            f"{self.jobs_kept} kept for rows that still need them, {self.seconds:.1f}s"
        )
        return text if self.complete else f"{text}; more remain for the next sweep"


def cutoff(days: int, now: dt.datetime | None = None) -> dt.datetime:
    return (now or timezone.now()) - dt.timedelta(days=days)


def old_jobs(before: dt.datetime, after: tuple | None, limit: int) -> list[tuple]:
    """``(finished_at, id)`` of the next ``limit`` finished jobs older than ``before``,
    after the key ``after``: one range scan of job_finished."""
    rows = Job.objects.filter(finished_at__lt=before, status__in=TERMINAL_STATES)
    if after is not None:
        finished_at, pk = after
        rows = rows.filter(Q(finished_at__gt=finished_at) | Q(finished_at=finished_at, pk__gt=pk))
    return list(rows.order_by("finished_at", "pk").values_list("finished_at", "pk")[:limit])


def kept_by_others(job_ids) -> set:
    kept = set()
    for keeper in registry.job_keepers():
        kept.update(keeper(job_ids))
    return kept


def archive_key(first: tuple, last: tuple) -> str:
    finished_at, first_id = first
    return f"{ARCHIVE_PREFIX}/{finished_at:%Y/%m/%d}/{first_id}-{last[1]}.jsonl.gz"


def archive_lines(job_ids):
    """One JSON document per job, in ``job_ids``' order: every field, and its log lines."""
    jobs = {job["id"]: job for job in Job.objects.filter(pk__in=job_ids).values()}
    logs: dict[uuid.UUID, list[dict]] = {job_id: [] for job_id in jobs}
    for line in (
        JobLog.objects.filter(job_id__in=job_ids)
        .order_by("job_id", "seq")
        .values_list("job_id", *LOG_FIELDS)
        .iterator(chunk_size=2000)
    ):
        logs[line[0]].append(dict(zip(LOG_FIELDS, line[1:], strict=True)))
    for job_id in job_ids:
        if job_id in jobs:
            document = {"job": jobs[job_id], "logs": logs[job_id]}
            yield json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":")) + "\n"


def write_archive(batch: list[tuple]) -> str:
    """Store the batch's jobs and logs as gzipped JSON lines; returns the storage key.

    The key names the batch's first and last job, so a sweep that repeats a batch (another
    node, a crash before the delete) writes the same file again rather than a new one.
    """
    key = archive_key(batch[0], batch[-1])
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as packed:
            text = io.TextIOWrapper(packed, encoding="utf-8")
            text.writelines(archive_lines([pk for _, pk in batch]))
            text.flush()
            text.detach()
        spool.seek(0)
        storage = storages[ARCHIVE_STORAGE]
        if storage.exists(key):
            storage.delete(key)  # the same batch again: its newest state wins
        return storage.save(key, File(spool, name=key.rsplit("/", 1)[1]))


def read_archive(key: str) -> list[dict]:
    """The documents of an archive (operators, tests): ``[{"job": {...}, "logs": [...]}]``."""
    with storages[ARCHIVE_STORAGE].open(key, "rb") as stored, gzip.open(stored, "rt") as text:
        return [json.loads(line) for line in text]


def delete_jobs(job_ids, before: dt.datetime) -> tuple[int, int]:
    """Delete those of ``job_ids`` that are still finished before ``before``, unlocked and
    unneeded; returns (jobs, log lines) deleted."""
    with transaction.atomic():
        locked = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(pk__in=job_ids, finished_at__lt=before, status__in=TERMINAL_STATES)
            .values_list("pk", flat=True)
        )
        # Asked again under the lock: a row that references a job locks it to insert.
        kept = kept_by_others(locked)
        doomed = [pk for pk in locked if pk not in kept]
        if not doomed:
            return 0, 0
        _, deleted = Job.objects.filter(pk__in=doomed).delete()
    return deleted.get(Job._meta.label, 0), deleted.get(JobLog._meta.label, 0)


def sweep_jobs(
    *,
    days: int | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    archive: bool | None = None,
    now: dt.datetime | None = None,
    stop=None,
) -> SweepResult:
    """Archive and delete finished jobs older than ``days`` (JOB_RETENTION_DAYS), oldest
    first, ``batch_size`` at a time, until none is left or ``max_seconds`` have passed (or
    ``stop.stopping``)."""
    days = settings.JOB_RETENTION_DAYS if days is None else days
    batch_size = batch_size or settings.JOB_RETENTION_BATCH
    archive = settings.JOB_ARCHIVE if archive is None else archive
    result = SweepResult()
    if days <= 0:
        return result
    began = time.monotonic()
    before = cutoff(days, now)
    holder = uuid.uuid4().hex
    lock_seconds = int(max_seconds or 3600) + 300
    try:
        locked = cache.add(LOCK_KEY, holder, timeout=lock_seconds)
    except Exception:  # noqa: BLE001 - without the cache the nodes may only repeat work
        logger.warning("retention: no cache lock, sweeping unlocked")
        locked = None
    if locked is False:
        result.busy = True
        return result
    try:
        after = None
        while True:
            if (max_seconds is not None and time.monotonic() - began >= max_seconds) or (
                stop is not None and stop.stopping
            ):
                result.complete = False
                break
            rows = old_jobs(before, after, batch_size)
            if not rows:
                break
            after = rows[-1]
            kept = kept_by_others([pk for _, pk in rows])
            batch = [row for row in rows if row[1] not in kept]
            result.jobs_kept += len(kept)
            if not batch:
                continue
            if archive:
                result.archives.append(write_archive(batch))
            jobs, logs = delete_jobs([pk for _, pk in batch], before)
            result.jobs_deleted += jobs
            result.logs_deleted += logs
            result.batches += 1
    finally:
        if locked:
            try:
                if cache.get(LOCK_KEY) == holder:
                    cache.delete(LOCK_KEY)
            except Exception:  # noqa: BLE001 - the lock expires by itself
                logger.warning("retention: could not release the cache lock")
    result.seconds = time.monotonic() - began
    if result.jobs_deleted:
        logger.info("retention: %s", result)
    return result


def periodic_sweep():
    """The worker supervisor's run: bounded by JOB_RETENTION_RUN_SECONDS, quiet when idle."""
    result = sweep_jobs(max_seconds=settings.JOB_RETENTION_RUN_SECONDS)
    return result if result.jobs_deleted or not result.complete else None
