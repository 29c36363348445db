"""Claiming: one short transaction that gives a worker the best eligible job right now."""

import contextlib
import datetime as dt
import uuid

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, Exists, Q
from django.db.models.functions import Now

from builds import metrics
from builds.choices import JobStatus, Tier, WorkerState
from builds.engine import events
from builds.engine.exceptions import WorkerDraining
from builds.engine.rows import fetch_jobs
from builds.fairness import CLASSES_BY_RANK, CYCLE, serve_order
from builds.limits import concurrency_limit
from builds.models import Account, FairnessCursor, Job, Worker
from builds.tiers import TIERS

DRAINING_SQLSTATE = "BH001"  # raised by the claim function (migration 0007)


def _advance_cursor() -> int:
    """Lock the cursor row and advance it in one statement; returns the slot it was at.

    The row lock orders all claims until the transaction ends; a claim that takes nothing
    rolls the advance back with it.
    """
    table = connection.ops.quote_name(FairnessCursor._meta.db_table)
    sql = f"UPDATE {table} SET position = position + 1 WHERE id = 1 RETURNING position"  # noqa: S608 - a quoted table name
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
        if row is None:  # a database set up without the migration's row
            try:
                with transaction.atomic():
                    FairnessCursor.objects.create(pk=1, position=0)
            except IntegrityError:
                pass  # another claim created it first
            cursor.execute(sql)
            row = cursor.fetchone()
    return row[0] - 1


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
    if running is None:  # one query: the accounts with running jobs, counted, with limits
        accounts = (
            Account.objects.filter(jobs__status=JobStatus.RUNNING)
            .annotate(running=Count("jobs"))
            .select_related("enterprise_limit")
        )
        return [a.pk for a in accounts if a.running >= concurrency_limit(a)]
    if not running:
        return []
    with_jobs = Account.objects.filter(pk__in=running).select_related("enterprise_limit")
    return [a.pk for a in with_jobs if running[a.pk] >= concurrency_limit(a)]


def eligible_jobs():
    """Queued jobs that could start now, ignoring concurrency (see accounts_at_their_limit)."""
    return Job.objects.filter(status=JobStatus.QUEUED, account__blocked=False).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=Now())
    )


def claim_next_job(worker_id: str) -> Job | None:
    """Claim the job the fairness cycle says is next, or None when nothing is eligible or
    the worker is draining (take_next_job tells the two apart)."""
    try:
        return take_next_job(worker_id)
    except WorkerDraining:
        return None


def take_next_job(worker_id: str) -> Job | None:
    """Claim the job the fairness cycle says is next, or None when nothing is eligible.

    When no queued job could start, the claim only looks (no fairness slot, no write).
    Otherwise the cursor row's lock orders all claims, so per-account running counts read
    here stay true until this transaction commits; queued rows are taken with SKIP LOCKED.
    A draining worker gets nothing: WorkerDraining when jobs wait for another worker. On
    PostgreSQL the same steps run as one server-side function (migrations 0006, 0007): one
    round trip instead of seven, and no query to build in Python.
    """
    if connection.vendor == "postgresql":
        job = _claim_in_database(worker_id)
    else:
        job = _claim_with_queries(worker_id)
    if job is None:
        metrics.claim_found_nothing("nothing_eligible")
    else:
        metrics.job_claimed(job)
        events.push_on_commit(job.pk, events.status_message(job))
    return job


def _sql_array(values, kind: str) -> str:
    """A constant of this module as an SQL array literal (names and numbers only)."""
    items = [str(value) for value in values]
    if not all(item.replace("_", "").isalnum() for item in items):
        raise ValueError(f"not a plain name or number: {items}")
    quoted = items if kind == "integer" else [f"'{item}'" for item in items]
    return f"ARRAY[{', '.join(quoted)}]::{kind}[]"


# The cycle, the classes and the tiers' limits are constants of this process, written into
# the statement once: only the worker, the lease token and its length vary per call.
_CLAIM_SQL = (
    "SELECT * FROM buildhub_claim_job(%s, %s::uuid, %s, "  # noqa: S608 - constants of the code
    f"{_sql_array(CYCLE, 'text')}, {_sql_array(CLASSES_BY_RANK, 'text')}, "
    f"{_sql_array(TIERS, 'text')}, "
    f"{_sql_array([spec.max_concurrent for spec in TIERS.values()], 'integer')}, "
    f"'{Tier.ENTERPRISE.value}')"
)


def _claim_in_database(worker_id: str) -> Job | None:
    params = [worker_id, uuid.uuid4(), settings.JOB_LEASE_SECONDS]
    # Inside a transaction, a refusal must not end it: a savepoint holds the call then.
    held = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with held:
            claimed = fetch_jobs(_CLAIM_SQL, params)
            return claimed[0] if claimed else None
    except DatabaseError as error:
        if getattr(error.__cause__, "sqlstate", None) == DRAINING_SQLSTATE:
            raise WorkerDraining(worker_id) from error
        raise


@transaction.atomic
def _claim_with_queries(worker_id: str) -> Job | None:
    # Whether any queued job could start, and whether the worker drains: one query.
    row = (
        Worker.objects.filter(pk=worker_id)
        .annotate(work=Exists(eligible_jobs()))
        .values_list("state", "work")
        .first()
    )
    state, work = row if row is not None else (None, eligible_jobs().exists())
    if not work:
        return None
    if state == WorkerState.DRAINING:
        raise WorkerDraining(worker_id)
    position = _advance_cursor()
    candidates = eligible_jobs().exclude(account_id__in=accounts_at_their_limit())
    job = None
    for priority_class in serve_order(position):
        job = (  # the whole row, locked, with the database's clock: no reload after the UPDATE
            candidates.filter(priority_class=priority_class)
            .order_by("-run_now", "created_at", "pk")
            .select_related("account")
            .select_for_update(skip_locked=True, of=("self",))
            .annotate(db_now=Now())
            .first()
        )
        if job is not None:
            break
    if job is None:
        transaction.set_rollback(True)  # the slot stays for the next claim
        return None
    changes = {
        "status": JobStatus.RUNNING,
        "worker_id": worker_id,
        "lease_token": uuid.uuid4(),
        "lease_expires_at": job.db_now + dt.timedelta(seconds=settings.JOB_LEASE_SECONDS),
        "started_at": job.db_now,
        "attempts": job.attempts + 1,  # the row is locked: these are its values now
        "cancel_requested_at": None,
        "run_now": False,
        "stage": "Starting",
        "state_seq": job.state_seq + 1,
    }
    if not Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(**changes):
        transaction.set_rollback(True)
        return None
    for field, value in changes.items():
        setattr(job, field, value)
    return job
