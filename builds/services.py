"""Verbs on accounts, usage and API tokens."""

import datetime as dt
import re
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.text import slugify

from buildhub.errors import ServiceError
from builds.choices import Tier, TokenScope
from builds.engine.tickets import issue_ticket
from builds.models import Account, ApiToken, BuildUsage

# last_used_at is bookkeeping: write it at most this often per token.
TOKEN_TOUCH_INTERVAL = dt.timedelta(seconds=60)


class QuotaExhausted(ServiceError):
    status = 429
    code = "quota_exhausted"


class TokenRejected(ServiceError):
    status = 401
    code = "authentication_failed"


def month_start(moment: dt.datetime) -> dt.date:
    return moment.astimezone(dt.UTC).date().replace(day=1)


def next_month_start(moment: dt.datetime) -> dt.datetime:
    first = month_start(moment)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.UTC)


@transaction.atomic
def create_account(name: str, *, tier: str = Tier.FREE, slug: str = "") -> Account:
    if tier not in Tier.values:
        raise ServiceError(
            f"Unknown tier {tier!r}; choose one of {', '.join(Tier.values)}.",
            fields={"tier": "unknown tier"},
        )
    slug = slug or slugify(name)
    if not slug:
        raise ServiceError(
            "An account needs a name with letters or digits.", fields={"name": "empty"}
        )
    if Account.objects.filter(slug=slug).exists():
        raise ServiceError(
            f"An account with slug {slug!r} exists already.",
            code="conflict",
            status=409,
            fields={"slug": "taken"},
        )
    return Account.objects.create(name=name, slug=slug, tier=tier)


def block_account(account: Account, reason: str) -> bool:
    """Hold the account: its submissions are refused and its queued jobs wait, unclaimed,
    until it is unblocked. True when this call blocked it, False when it was already."""
    blocked = Account.objects.filter(pk=account.pk, blocked=False).update(
        blocked=True, blocked_reason=reason[:500], blocked_at=Now()
    )
    account.blocked = True
    return bool(blocked)


@transaction.atomic
def unblock_account(account: Account) -> Account:
    """Lift the hold; the account's queued jobs are eligible again (a ticket wakes a worker
    once this commits)."""
    if not Account.objects.filter(pk=account.pk, blocked=True).update(
        blocked=False, blocked_reason="", blocked_at=None
    ):
        raise ServiceError("This account is not blocked.", code="conflict", status=409)
    account.blocked = False
    transaction.on_commit(issue_ticket)
    return account


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # the whole bearer value; shown once, never stored


def create_api_token(
    account: Account, *, name: str, scopes: list[str], expires_at: dt.datetime | None = None
) -> IssuedToken:
    unknown = sorted(set(scopes) - set(TokenScope.values))
    if unknown or not scopes:
        raise ServiceError(
            f"Scopes must be some of {', '.join(TokenScope.values)}; "
            f"got {', '.join(unknown) or 'none'}.",
            fields={"scopes": "unknown scope" if unknown else "required"},
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError(
            "A token cannot expire in the past.", fields={"expires_at": "in the past"}
        )
    token = ApiToken(account=account, name=name, scopes=sorted(set(scopes)), expires_at=expires_at)
    secret = token.set_new_secret()
    token.save()
    return IssuedToken(token=token, secret=secret)


def actor_name(user, token: ApiToken | None = None) -> str:
    """Who did something, as a job's log names them: an API token by its name and id, else
    the (staff) user signed in to the admin or the API."""
    if token is not None:
        return f'API token "{token.name}" (id {token.pk})'
    return f"staff user {user.get_username()}"


def revoke_api_token(token: ApiToken) -> ApiToken:
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=Now())
    if not updated:
        raise ServiceError("This token is revoked already.", code="conflict", status=409)
    token.refresh_from_db(fields=["revoked_at"])
    return token


_TOKEN_SHAPE = re.compile(re.escape(ApiToken.PREFIX) + r"([0-9a-f]{1,16})_([A-Za-z0-9_-]{1,256})")


def authenticate_token(raw: str) -> ApiToken:
    """The live token for a bearer value, or TokenRejected saying why (never which part)."""
    # Checked before any query: a value the database cannot hold (a NUL byte) or a huge one
    # is refused as malformed, not passed on.
    shape = _TOKEN_SHAPE.fullmatch(raw)
    if shape is None:
        raise TokenRejected("Malformed API token.")
    key_id, secret = shape.groups()
    token = ApiToken.objects.select_related("account").filter(key_id=key_id).first()
    if token is None or not token.matches(secret):
        raise TokenRejected("Invalid API token.")
    now = timezone.now()
    if token.is_revoked:
        raise TokenRejected("This API token has been revoked.")
    if token.is_expired(now):
        raise TokenRejected("This API token has expired.")
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def current_usage(account: Account, now: dt.datetime | None = None) -> BuildUsage:
    """This month's usage; an unsaved zero row when the account has not built yet."""
    now = now or timezone.now()
    month = month_start(now)
    usage = BuildUsage.objects.filter(account=account, month=month).first()
    if usage is None:
        limits = account.effective_limits(now)
        usage = BuildUsage(
            account=account,
            month=month,
            builds_limit=limits.builds_per_month,
            addon_minutes=limits.addon_minutes,
        )
    return usage


@transaction.atomic
def consume_monthly_build(account: Account) -> BuildUsage:
    """Count one build against this month's quota, or raise QuotaExhausted.

    The increment is one conditional UPDATE, so concurrent submissions never lose a count
    and never pass the limit together.
    """
    now = timezone.now()
    limits = account.effective_limits(now)
    usage, _ = BuildUsage.objects.get_or_create(
        account=account,
        month=month_start(now),
        defaults={"builds_limit": limits.builds_per_month, "addon_minutes": limits.addon_minutes},
    )
    rows = BuildUsage.objects.filter(pk=usage.pk)
    if limits.builds_per_month is not None:
        rows = rows.filter(Q(builds_used__lt=limits.builds_per_month))
    updated = rows.update(
        builds_used=F("builds_used") + 1,
        builds_limit=limits.builds_per_month,
        addon_minutes=limits.addon_minutes,
    )
    if not updated:
        resets_at = next_month_start(now)
        raise QuotaExhausted(
            f"The {account.get_tier_display()} tier allows {limits.builds_per_month} builds a "
            f"month and this account has used them all; the quota resets at "
            f"{resets_at:%Y-%m-%dT%H:%M:%SZ}.",
            headers={"Retry-After": str(int((resets_at - now).total_seconds()))},
            extra={"resets_at": resets_at.isoformat().replace("+00:00", "Z")},
        )
    usage.refresh_from_db()
    return usage
