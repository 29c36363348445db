"""Job log lines: redacted, numbered without gaps, written in batches by the lease holder."""

import logging
import threading
from collections.abc import Sequence

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from buildhub.redaction import REDACTED, redact  # noqa: F401 - REDACTED: also imported from here
from builds.choices import JobStatus, LogLevel
from builds.engine.events import push_on_commit
from builds.models import Job, JobLog

MAX_LINE = 8000
# Every line of a running job also goes to the worker's own log (with the job's id).
output_logger = logging.getLogger("buildhub.jobs.output")


def append_logs(job_id, lines: list[tuple], *, lease_token=None) -> int:
    """Store ``(ts, level, message)`` lines after the job's last; returns the new last seq.

    With a lease token the write happens only while that lease holds (0 when it does not).
    """
    if not lines:
        return 0
    with transaction.atomic():
        rows = Job.objects.filter(pk=job_id)
        if lease_token is not None:
            rows = rows.filter(lease_token=lease_token, status=JobStatus.RUNNING)
        if not rows.update(log_seq=F("log_seq") + len(lines)):
            return 0
        last = Job.objects.filter(pk=job_id).values_list("log_seq", flat=True).get()
        store_lines(job_id, last, lines)
    return last


def numbered(job_id, last: int, lines: Sequence[tuple]) -> list[JobLog]:
    """``(ts, level, message)`` lines as the job's log rows, numbered up to ``last``."""
    first = last - len(lines) + 1
    return [
        JobLog(job_id=job_id, seq=first + offset, ts=ts, level=level, message=message)
        for offset, (ts, level, message) in enumerate(lines)
    ]


def store_lines(job_id, last: int, lines: Sequence[tuple]) -> None:
    """Write ``lines`` numbered up to ``last`` (the job's ``log_seq``, already advanced by
    their count in this transaction) and push them on commit."""
    entries = numbered(job_id, last, lines)
    JobLog.objects.bulk_create(entries)
    push_on_commit(job_id, *(log_message(entry) for entry in entries))


def stored_line_messages(job_id, last: int, lines: Sequence[tuple]) -> list[dict]:
    """The events of ``lines`` the caller stored numbered up to ``last``."""
    return [log_message(entry) for entry in numbered(job_id, last, lines)]


def log_message(entry: JobLog) -> dict:
    return {
        "event": "log",
        "job": str(entry.job_id),
        "seq": entry.seq,
        "ts": entry.ts.isoformat(),
        "level": entry.level,
        "message": entry.message,
    }


class LogBuffer:
    """Collects a running job's lines and writes them in batches (flushed by the monitor)."""

    def __init__(self, job_id, lease_token, secrets: set[str]):
        self.job_id = job_id
        self.lease_token = lease_token
        self.secrets = secrets
        self._lines: list[tuple] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one batch at a time keeps seq in line order

    def add(self, message: str, level: str = LogLevel.INFO) -> None:
        clean = redact(message.rstrip("\n"), self.secrets)[:MAX_LINE]
        output_logger.log(logging.getLevelName(level.upper()), clean)
        with self._lock:
            self._lines.append((timezone.now(), level, clean))

    def __len__(self):
        return len(self._lines)

    def take(self) -> list[tuple]:
        """The lines not written yet, which the caller now writes (the job's last batch)."""
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def flushing(self):
        """Held while a batch is written: the last batch waits for one in flight."""
        return self._flush_lock

    def flush(self) -> None:
        with self._flush_lock:
            lines = self.take()
            if not lines:
                return
            try:
                append_logs(self.job_id, lines, lease_token=self.lease_token)
            except Exception:
                with self._lock:  # not written: kept, ahead of newer lines, for the next flush
                    self._lines[:0] = lines
                raise
