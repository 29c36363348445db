"""Submission: the one door every API uses to put a job in the queue."""

import contextlib

from django.db import IntegrityError, connection, transaction

from buildhub.errors import ServiceError
from builds import metrics, registry
from builds.choices import Tier
from builds.engine.tickets import wake_workers
from builds.limits import timeout_limit_minutes
from builds.models import Account, Job
from builds.services import consume_monthly_build

BLOCKED_MESSAGE = (
    "This account cannot submit builds at the moment. Contact support if you think this is "
    "a mistake."
)


class AccountBlocked(ServiceError):
    status = 403
    code = "account_blocked"


def resolve_timeout_seconds(account: Account, timeout_minutes) -> int:
    """The job's timeout: the account's effective limit unless a shorter one is asked for."""
    limit = timeout_limit_minutes(account)
    if timeout_minutes is None:
        return limit * 60
    if isinstance(timeout_minutes, bool) or not isinstance(timeout_minutes, int):
        raise ServiceError(
            "timeout_minutes must be a whole number of minutes.",
            fields={"timeout_minutes": "must be an integer"},
        )
    if timeout_minutes < 1:
        raise ServiceError(
            "timeout_minutes must be at least 1.", fields={"timeout_minutes": "at least 1"}
        )
    if timeout_minutes > limit:
        tier = Tier(account.tier).label
        raise ServiceError(
            f"timeout_minutes {timeout_minutes} exceeds this account's limit of "
            f"{limit} minutes ({tier} tier, maximum "
            f"{account.tier_spec.max_timeout_minutes} with add-ons).",
            code="timeout_limit",
            fields={"timeout_minutes": f"at most {limit}"},
        )
    return timeout_minutes * 60


def submit_job(
    account: Account,
    kind: str,
    params: dict | None = None,
    *,
    timeout_minutes: int | None = None,
    idempotency_key: str = "",
    submitted_by: str = "",
    staff: bool = False,
    max_attempts: int = 3,
    request_meta: dict | None = None,
) -> tuple[Job, bool]:
    """Queue a job for ``account``; returns ``(job, created)``.

    Refuses a blocked account (403), an exhausted monthly quota (429) and a timeout above the
    account's limit (400). The same idempotency key from the same account returns the first
    job instead of queueing another.
    """
    job_kind = registry.get_kind(kind)
    if job_kind is None:
        raise ServiceError(f"Unknown job kind {kind!r}.", fields={"kind": "unknown"})
    if job_kind.staff_only and not staff:
        raise ServiceError(
            f"Jobs of kind {kind!r} are for staff only.", code="permission_denied", status=403
        )
    if len(idempotency_key) > 255:
        raise ServiceError(
            "Idempotency-Key is at most 255 characters.", fields={"idempotency_key": "too long"}
        )
    if idempotency_key:
        existing = Job.objects.filter(account=account, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    if account.blocked:
        raise AccountBlocked(BLOCKED_MESSAGE)
    for check in registry.submission_checks():
        check(account=account, kind=kind, params=params or {}, request_meta=request_meta or {})
    timeout_seconds = resolve_timeout_seconds(account, timeout_minutes)
    # A build's quota count and its job commit together; a job that counts nothing is one
    # INSERT that commits by itself (in a savepoint inside a caller's transaction).
    together = job_kind.counts_as_build or connection.in_atomic_block
    held = transaction.atomic() if together else contextlib.nullcontext()
    try:
        with held:
            if job_kind.counts_as_build:
                consume_monthly_build(account)
            job = Job.objects.create(
                kind=kind,
                account=account,
                priority_class=account.tier_spec.priority_class,
                params=params or {},
                timeout_seconds=timeout_seconds,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
                submitted_by=submitted_by[:150],
                stage="Queued",
            )
            transaction.on_commit(wake_workers)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won; answer with its job.
        return Job.objects.get(account=account, idempotency_key=idempotency_key), False
    metrics.job_submitted(job)
    return job, True
