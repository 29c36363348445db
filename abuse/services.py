"""The verbs of abuse detection: record signals, score, flag, block, and the review actions."""

import datetime as dt
import ipaddress
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.db.models.functions import Now
from django.utils import timezone

from abuse.choices import (
    CLEARING_ACTIONS,
    FlagPriority,
    FlagStatus,
    PatternKind,
    ReviewActionKind,
    SignalKind,
)
from abuse.models import AbuseSignal, ConfirmedPattern, Flag, ReviewAction, Score
from abuse.scoring import Assessment, assess, normalise_app_name
from buildhub import metrics
from buildhub.errors import ServiceError
from builds import registry
from builds.engine.submit import BLOCKED_MESSAGE, AccountBlocked
from builds.models import Account, Job
from builds.services import block_account
from builds.services import unblock_account as lift_block

logger = logging.getLogger("buildhub.abuse")

SYSTEM_ACTOR = "system"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Accounts rescored after a build completes, besides its own: those its bundle links it to.
RESCORE_LINKED_LIMIT = 20


# --- signals and scoring -----------------------------------------------------------------
def _valid_ip(value) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip())) if value else None
    except ValueError:
        return None


# Submission signals and scores are written with plain SQL: this runs before every build
# submission, and the ORM's bulk machinery costs more than the statements themselves.
INSERT_SIGNAL_SQL = (
    "INSERT INTO {signals} (account_id, kind, bundle_hash, ip, app_name, app_name_key, "
    "app_name_stem, account_age_days, created_at) VALUES (%s, %s, '', %s, %s, %s, %s, %s, %s)"
)
# A new open flag; a concurrent scoring may have opened it first (the one-open-flag constraint).
INSERT_FLAG_SQL = (
    "INSERT INTO {flags} (account_id, status, priority, score, breakdown, created_at, "
    "resolution_reason) VALUES (%s, %s, %s, %s, %s, %s, '') ON CONFLICT DO NOTHING"
)
UPSERT_SCORE_SQL = (
    "INSERT INTO {scores} (account_id, score, breakdown, computed_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (account_id) DO UPDATE SET score = excluded.score, "
    "breakdown = excluded.breakdown, computed_at = excluded.computed_at"
)


def record_submission(
    account: Account, *, ip=None, app_name: str = "", now=None, relax_commit=False
) -> None:
    """``relax_commit``: from _advisory_transaction, sent in the same round trip."""
    now = now or timezone.now()
    app_name = (app_name or "")[:200]
    key, stem = normalise_app_name(app_name)
    sql = INSERT_SIGNAL_SQL.format(signals=AbuseSignal._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"{RELAX_COMMIT_SQL}; {sql}" if relax_commit else sql,
            [
                account.pk,
                SignalKind.SUBMISSION.value,
                _valid_ip(ip),
                app_name,
                key,
                stem,
                max((now - account.created_at).days, 0),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )


def store_score(account: Account, total: int, breakdown: dict, now) -> None:
    breakdown_field = Score._meta.get_field("breakdown")
    with connection.cursor() as cursor:
        cursor.execute(
            UPSERT_SCORE_SQL.format(scores=Score._meta.db_table),
            [
                account.pk,
                total,
                breakdown_field.get_db_prep_save(breakdown, connection),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )


def record_bundle(job: Job, bundle_hash: str) -> AbuseSignal:
    return AbuseSignal.objects.create(
        account_id=job.account_id, job=job, kind=SignalKind.BUNDLE, bundle_hash=bundle_hash
    )


def score_account(account: Account, now=None) -> Assessment:
    """Recompute and store the account's score, then flag or block it as the score says.

    Above ``ABUSE_FLAG_THRESHOLD`` the account enters the review queue; above
    ``ABUSE_BLOCK_THRESHOLD`` it is blocked at once only when it matches a pattern a reviewer
    confirmed (after any later decision of a reviewer to clear it), otherwise it is flagged
    with high priority. ``account.blocked`` is updated in place.
    """
    now = now or timezone.now()
    assessment = assess(account, now)
    total, breakdown = assessment.total, assessment.breakdown()
    store_score(account, total, breakdown, now)
    metrics.ABUSE_SCORES.inc()
    if account.blocked or total <= settings.ABUSE_FLAG_THRESHOLD:
        return assessment
    if total > settings.ABUSE_BLOCK_THRESHOLD:
        pattern = confirmed_pattern_for(account, assessment)
        if pattern is not None:
            auto_block(account, assessment, pattern)
            return assessment
        raise_flag(account, assessment, FlagPriority.HIGH)
    else:
        raise_flag(account, assessment, FlagPriority.NORMAL)
    return assessment


def confirmed_pattern_for(account: Account, assessment: Assessment) -> ConfirmedPattern | None:
    """A confirmed pattern the account matches, confirmed after a reviewer last cleared it."""
    matches = Q(kind=PatternKind.IP, value__in=assessment.ips) | Q(
        kind=PatternKind.BUNDLE_HASH, value__in=assessment.bundle_hashes
    )
    patterns = list(
        ConfirmedPattern.objects.filter(matches)
        .select_related("confirmed_by")
        .order_by("confirmed_at")
    )
    if not patterns:
        return None
    cleared_at = (
        ReviewAction.objects.filter(account_id=account.pk, action__in=CLEARING_ACTIONS)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return next((p for p in patterns if cleared_at is None or p.confirmed_at > cleared_at), None)


def raise_flag(account: Account, assessment: Assessment, priority: str) -> bool:
    """Put the account in the review queue, or refresh its open flag; True when it opened one.

    After a reviewer resolved a flag, a new one is raised only for a higher score than the
    one they judged.
    """
    total = assessment.total
    # An open flag shows the account's current breakdown (its Score): refresh the numbers only.
    if Flag.objects.filter(account=account, status=FlagStatus.OPEN).update(
        score=total, priority=priority
    ):
        return False
    judged = (
        Flag.objects.filter(account=account)
        .exclude(status=FlagStatus.OPEN)
        .order_by("-created_at")
        .values_list("score", flat=True)
        .first()
    )
    if judged is not None and total <= judged:
        return False
    breakdown = Flag._meta.get_field("breakdown").get_db_prep_save(
        assessment.breakdown(), connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT_FLAG_SQL.format(flags=Flag._meta.db_table),
            [
                account.pk,
                FlagStatus.OPEN.value,
                priority,
                total,
                breakdown,
                connection.ops.adapt_datetimefield_value(timezone.now()),
            ],
        )
        opened = cursor.rowcount == 1
    if not opened:  # a concurrent scoring opened it first
        Flag.objects.filter(account=account, status=FlagStatus.OPEN).update(
            score=total, priority=priority
        )
    if opened:
        transaction.on_commit(metrics.ABUSE_FLAGS.inc)
    return opened


@transaction.atomic
def auto_block(account: Account, assessment: Assessment, pattern: ConfirmedPattern) -> bool:
    total = assessment.total
    reason = (
        f"Score {total} is above {settings.ABUSE_BLOCK_THRESHOLD} and matches confirmed "
        f"{pattern.get_kind_display().lower()} pattern #{pattern.pk} "
        f"(confirmed by {pattern.confirmed_by or 'a deleted user'} "
        f"on {pattern.confirmed_at:%Y-%m-%d})."
    )
    if not _block(account, f"Abuse: {reason}"):
        return False
    fields = {
        "status": FlagStatus.BLOCKED,
        "score": total,
        "breakdown": assessment.breakdown(),
        "priority": FlagPriority.HIGH,
        "resolved_at": Now(),
        "resolution_reason": reason,
    }
    flag = Flag.objects.filter(account=account, status=FlagStatus.OPEN).first()
    if flag is not None:
        Flag.objects.filter(pk=flag.pk, status=FlagStatus.OPEN).update(**fields)
    else:
        flag = Flag.objects.create(account=account, **{**fields, "resolved_at": timezone.now()})
    action = record_review(
        ReviewActionKind.AUTO_BLOCK, account.pk, None, reason, flag=flag, score=total
    )
    action.patterns.add(pattern)
    logger.warning("abuse: account %s blocked automatically: %s", account.slug, reason)
    return True


def record_review(action: str, account_id: int, user, reason: str, *, flag=None, score=None):
    """The audit row of a decision: what, about whom, by whom (None: the system), why."""
    return ReviewAction.objects.create(
        action=action,
        account_id=account_id,
        flag=flag,
        actor=user,
        actor_name=user.get_username() if user is not None else SYSTEM_ACTOR,
        reason=reason,
        score=score,
    )


def _block(account: Account, reason: str) -> bool:
    """The engine's block (``builds.services.block_account``), committed durably and counted."""
    _commit_durably()  # a block must survive a crash, unlike a signal
    blocked = block_account(account, reason)
    if blocked:
        transaction.on_commit(metrics.ABUSE_BLOCKS.inc)
    return blocked


# --- hooks the engine calls ----------------------------------------------------------------
RELAX_COMMIT_SQL = "SET LOCAL synchronous_commit TO OFF"


@contextmanager
def _advisory_transaction():
    """One transaction for signals, scores and flags, committed without waiting for the
    write-ahead log to reach the disk (PostgreSQL ``synchronous_commit = off``).

    These rows are advice to reviewers: a database crash may lose the last fraction of a
    second of them, which costs nothing, whereas waiting for the flush would cost every
    submission a disk sync. A block written in the same transaction asks for a durable
    commit again (see ``_block``).

    Yields whether the caller must relax the commit: with its first statement
    (``RELAX_COMMIT_SQL``; the hot path saves a round trip) or with ``_relax_commit()``.
    """
    outermost = not connection.in_atomic_block  # never relax a caller's transaction
    with transaction.atomic():
        yield outermost and connection.vendor == "postgresql"


def _relax_commit() -> None:
    with connection.cursor() as cursor:
        cursor.execute(RELAX_COMMIT_SQL)


def _commit_durably() -> None:
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO ON")


def check_submission(account: Account, kind: str, params: dict, request_meta: dict) -> None:
    """The engine's submission check: record the signal, score, and refuse a blocked account.

    The refusal is the engine's own 403 for blocked accounts, which does not say why.
    """
    job_kind = registry.get_kind(kind)
    if job_kind is None or not job_kind.counts_as_build:
        return
    with _advisory_transaction() as relax_commit:
        record_submission(
            account,
            ip=request_meta.get("ip"),
            app_name=request_meta.get("app_name") or params.get("app") or "",
            relax_commit=relax_commit,
        )
        score_account(account)
    if account.blocked:
        raise AccountBlocked(BLOCKED_MESSAGE)


def on_job_completed(sender, job: Job, **kwargs) -> None:
    """A build that produced a bundle: record its hash, rescore its account and the accounts
    the bundle links it to. Never raises: the job has succeeded whatever happens here."""
    bundle_hash = str((job.result or {}).get("bundle_sha256") or "").lower()
    if not SHA256_HEX.match(bundle_hash):
        return
    try:
        with _advisory_transaction() as relax_commit:
            if relax_commit:
                _relax_commit()
            record_bundle(job, bundle_hash)
            account = Account.objects.get(pk=job.account_id)
            assessment = score_account(account)
            linked = sorted(assessment.linked_accounts)[:RESCORE_LINKED_LIMIT]
            for other in Account.objects.filter(pk__in=linked):
                score_account(other)
    except Exception:  # scoring must not fail a finished build
        logger.exception("abuse: could not record the bundle of job %s", job.pk)


# --- review actions ------------------------------------------------------------------------
def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(
            "Give a reason; it is kept in the audit trail.", fields={"reason": "required"}
        )
    return reason


def _resolve_open_flag(flag: Flag, status: str, user, reason: str) -> None:
    resolved = Flag.objects.filter(pk=flag.pk, status=FlagStatus.OPEN).update(
        status=status, resolved_at=Now(), resolved_by=user, resolution_reason=reason
    )
    if not resolved:
        current = Flag.objects.get(pk=flag.pk)
        raise ServiceError(
            f"This flag is {current.get_status_display().lower()} already.",
            code="conflict",
            status=409,
        )


@transaction.atomic
def dismiss_flag(flag: Flag, user, reason: str) -> ReviewAction:
    reason = _reason(reason)
    _resolve_open_flag(flag, FlagStatus.DISMISSED, user, reason)
    return record_review(
        ReviewActionKind.DISMISS, flag.account_id, user, reason, flag=flag, score=flag.score
    )


def pattern_choices(account: Account) -> list[tuple[str, str, int]]:
    """``(kind, value, other accounts)`` for each bundle hash and IP of the account's signals
    that other accounts share too: what a reviewer may confirm as a pattern."""
    own = AbuseSignal.objects.filter(account=account).order_by()
    hashes = set(own.exclude(bundle_hash="").values_list("bundle_hash", flat=True)[:50])
    ips = set(own.filter(ip__isnull=False).values_list("ip", flat=True)[:50])
    others = AbuseSignal.objects.exclude(account=account).order_by()
    choices = []
    for kind, values, lookup in (
        (PatternKind.BUNDLE_HASH, hashes, "bundle_hash"),
        (PatternKind.IP, ips, "ip"),
    ):
        counts = dict(
            others.filter(**{f"{lookup}__in": values})
            .values_list(lookup)
            .annotate(accounts=Count("account", distinct=True))
            .values_list(lookup, "accounts")
        )
        choices += [(kind, value, counts.get(value, 0)) for value in sorted(values)]
    return sorted(choices, key=lambda choice: (-choice[2], choice[0], choice[1]))


@transaction.atomic
def confirm_pattern_and_block(
    flag: Flag, user, reason: str, patterns: list[tuple[str, str]]
) -> ReviewAction:
    """Confirm bundle hashes and/or IPs of the flagged account as abuse and block it.

    From then on, accounts above the block threshold that match one of them are blocked when
    they are scored, without waiting for review.
    """
    reason = _reason(reason)
    allowed = {(kind, value) for kind, value, _ in pattern_choices(flag.account)}
    chosen = [(str(kind), str(value)) for kind, value in patterns]
    if not chosen:
        raise ServiceError(
            "Choose at least one pattern to confirm.", fields={"patterns": "required"}
        )
    unknown = [value for kind, value in chosen if (kind, value) not in allowed]
    if unknown:
        raise ServiceError(
            "Only bundle hashes and IP addresses of this account can be confirmed.",
            fields={"patterns": "not of this account"},
        )
    _resolve_open_flag(flag, FlagStatus.BLOCKED, user, reason)
    confirmed = [
        ConfirmedPattern.objects.get_or_create(
            kind=kind,
            value=value,
            defaults={"confirmed_by": user, "reason": reason, "flag": flag},
        )[0]
        for kind, value in chosen
    ]
    _block(flag.account, f"Abuse: blocked by {user.get_username()} on review of flag #{flag.pk}.")
    action = record_review(
        ReviewActionKind.CONFIRM_AND_BLOCK,
        flag.account_id,
        user,
        reason,
        flag=flag,
        score=flag.score,
    )
    action.patterns.add(*confirmed)
    return action


@transaction.atomic
def unblock_account(account: Account, user, reason: str) -> ReviewAction:
    """Lift the block (``builds.services.unblock_account``: the account's queued jobs become
    eligible again) and resolve its blocking flag.

    Patterns confirmed before this decision no longer block the account by themselves.
    """
    reason = _reason(reason)
    lift_block(account)
    flag = (
        Flag.objects.filter(account=account, status=FlagStatus.BLOCKED)
        .order_by("-created_at")
        .first()
    )
    if flag is not None:
        Flag.objects.filter(pk=flag.pk, status=FlagStatus.BLOCKED).update(
            status=FlagStatus.UNBLOCKED,
            resolved_at=Now(),
            resolved_by=user,
            resolution_reason=reason,
        )
    return record_review(ReviewActionKind.UNBLOCK, account.pk, user, reason, flag=flag)


# --- retention -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PurgeResult:
    signals: int
    patterns: int
    cutoff: dt.datetime

    def __str__(self):
        return (
            f"Removed the IP address from {self.signals} abuse signal(s) and {self.patterns} "
            f"confirmed IP pattern(s) older than {self.cutoff:%Y-%m-%d %H:%M} UTC."
        )


def purge_expired_ips(now=None) -> PurgeResult:
    """Remove IP addresses older than ``ABUSE_IP_RETENTION_DAYS`` (signals keep the rest)."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.ABUSE_IP_RETENTION_DAYS)
    signals = AbuseSignal.objects.filter(ip__isnull=False, created_at__lt=cutoff).update(ip=None)
    patterns, _ = ConfirmedPattern.objects.filter(
        kind=PatternKind.IP, confirmed_at__lt=cutoff
    ).delete()
    return PurgeResult(signals, patterns, cutoff)
