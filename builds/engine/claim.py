"""Claiming: one short transaction that gives a worker the best eligible job right now."""

import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Now

from builds.choices import JobStatus
from builds.engine import events
from builds.engine.lifecycle import after, next_state
from builds.fairness import serve_order
from builds.limits import concurrency_limit
from builds.models import Account, FairnessCursor, Job


def _locked_cursor() -> FairnessCursor:
    cursor = FairnessCursor.objects.select_for_update().filter(pk=1).first()
    if cursor is not None:
        return cursor
    try:
        with transaction.atomic():
            FairnessCursor.objects.create(pk=1, position=0)
    except IntegrityError:
        pass  # another claim created it first
    return FairnessCursor.objects.select_for_update().get(pk=1)


def running_per_account() -> dict[int, int]:
    return dict(
        Job.objects.filter(status=JobStatus.RUNNING)
        .values("account")
        .annotate(count=Count("pk"))
        .values_list("account", "count")
    )


def accounts_at_their_limit(running: dict[int, int] | None = None) -> list[int]:
    """Accounts whose running jobs fill their concurrency limit (``running``: from
    running_per_account(), when the caller has it already)."""
    running = running_per_account() if running is None else running
    if not running:
        return []
    accounts = Account.objects.filter(pk__in=running).select_related("enterprise_limit")
    return [a.pk for a in accounts if running[a.pk] >= concurrency_limit(a)]


def eligible_jobs():
    """Queued jobs that could start now, ignoring concurrency (see accounts_at_their_limit)."""
    return Job.objects.filter(status=JobStatus.QUEUED, account__blocked=False).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=Now())
    )


@transaction.atomic
def claim_next_job(worker_id: str) -> Job | None:
    """Claim the job the fairness cycle says is next, or None when nothing is eligible.

    The cursor row's lock orders all claims, so per-account running counts read here stay
    true until this transaction commits; queued rows are taken with SKIP LOCKED.
    """
    cursor = _locked_cursor()
    candidates = eligible_jobs().exclude(account_id__in=accounts_at_their_limit())
    job_id = None
    for priority_class in serve_order(cursor.position):
        job_id = (
            candidates.filter(priority_class=priority_class)
            .order_by("-run_now", "created_at", "pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)
            .first()
        )
        if job_id is not None:
            break
    if job_id is None:
        return None
    updated = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING,
        worker_id=worker_id,
        lease_token=uuid.uuid4(),
        lease_expires_at=after(settings.JOB_LEASE_SECONDS),
        started_at=Now(),
        attempts=F("attempts") + 1,
        cancel_requested_at=None,
        run_now=False,
        stage="Starting",
        **next_state(),
    )
    if not updated:
        return None
    FairnessCursor.objects.filter(pk=1).update(position=F("position") + 1)
    job = Job.objects.select_related("account").get(pk=job_id)
    events.push_on_commit(job.pk, events.status_message(job))
    return job
