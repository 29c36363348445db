"""Scoring: five weak signals about an account, summed into one score with a breakdown.

Every lookup is an indexed range over a bounded window and returns at most
``CANDIDATE_LIMIT`` rows, so the cost of scoring does not grow with the signal table: an IP
shared by thousands of accounts (a carrier NAT) or a bundle every template user builds
costs the same as a rare one. The limit only caps which accounts a breakdown can name;
every threshold the rules test is far below it.
"""

import bisect
import datetime as dt
import difflib
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from abuse.choices import Rule, SignalKind
from abuse.models import AbuseSignal
from builds.models import Account

CANDIDATE_LIMIT = 200
OWN_SIGNAL_LIMIT = 200


def normalise_app_name(name: str) -> tuple[str, str]:
    """``(key, stem)``: the name's letters and digits in lower case without accents, and the
    key without digits (or the key itself when it is all digits)."""
    decomposed = unicodedata.normalize("NFKD", name or "")
    key = "".join(
        char for char in decomposed if char.isalnum() and not unicodedata.combining(char)
    ).casefold()[:200]
    stem = "".join(char for char in key if not char.isdigit())
    return key, stem or key


def names_similar(first: str, second: str, percent: int) -> bool:
    """difflib's ratio, compared in whole numbers so that the threshold is exact."""
    if not first or not second:
        return False
    matcher = difflib.SequenceMatcher(None, first, second, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return 2 * matched * 100 >= percent * (len(first) + len(second))


@dataclass
class RuleHit:
    rule: Rule
    points: int
    accounts: set[int]
    detail: str

    def as_dict(self) -> dict:
        return {
            "rule": self.rule.value,
            "label": self.rule.label,
            "points": self.points,
            "accounts": sorted(self.accounts),
            "detail": self.detail,
        }


@dataclass
class Assessment:
    """What the rules found about one account at one moment."""

    account_id: int
    hits: list[RuleHit] = field(default_factory=list)
    ips: set[str] = field(default_factory=set)
    bundle_hashes: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(hit.points for hit in self.hits)

    @property
    def linked_accounts(self) -> set[int]:
        return set().union(*(hit.accounts for hit in self.hits))

    def breakdown(self) -> dict:
        return {
            "rules": [hit.as_dict() for hit in self.hits],
            "linked_accounts": sorted(self.linked_accounts),
        }


def _days(days: int) -> dt.timedelta:
    return dt.timedelta(days=days)


def _other_signals(account: Account):
    # order_by() clears the default ordering, which would otherwise defeat DISTINCT.
    return AbuseSignal.objects.exclude(account_id=account.pk).order_by()


def assess(account: Account, now: dt.datetime | None = None) -> Assessment:
    now = now or timezone.now()
    ip_since = now - _days(settings.ABUSE_IP_WINDOW_DAYS)
    bundle_since = now - _days(settings.ABUSE_BUNDLE_WINDOW_DAYS)
    name_since = now - _days(settings.ABUSE_APP_NAME_WINDOW_DAYS)
    result = Assessment(account.pk)

    own = AbuseSignal.objects.filter(
        account_id=account.pk, created_at__gte=min(ip_since, bundle_since, name_since)
    ).values_list("kind", "ip", "bundle_hash", "app_name_key", "app_name_stem", "created_at")
    names: set[str] = set()
    stems: set[str] = set()
    last_submission = None
    for kind, ip, bundle_hash, name_key, name_stem, created_at in own[:OWN_SIGNAL_LIMIT]:
        if ip and created_at >= ip_since:
            result.ips.add(ip)
        if bundle_hash and created_at >= bundle_since:
            result.bundle_hashes.add(bundle_hash)
        if name_key and created_at >= name_since:
            names.add(name_key)
            stems.add(name_stem)
        if kind == SignalKind.SUBMISSION and last_submission is None:
            last_submission = created_at  # rows come newest first

    bundle_links = _shared_bundle(account, result, bundle_since)
    ip_links = _shared_ip(account, result, ip_since)
    _similar_app_names(account, result, names, stems, bundle_links | ip_links, name_since)
    _same_day_accounts(account, result)
    _build_burst(account, result, last_submission)
    return result


def _shared_bundle(account, result: Assessment, since) -> set[int]:
    if not result.bundle_hashes:
        return set()
    rows = (
        AbuseSignal.objects.filter(bundle_hash__in=result.bundle_hashes, created_at__gte=since)
        .order_by()
        .values_list("bundle_hash", "account_id")
        .distinct()[:CANDIDATE_LIMIT]
    )
    builders = defaultdict(set)
    for bundle_hash, account_id in rows:
        builders[bundle_hash].add(account_id)
    minimum = settings.ABUSE_BUNDLE_MIN_ACCOUNTS
    shared = {h: accounts for h, accounts in builders.items() if len(accounts) > minimum}
    if not shared:
        return set()
    linked = set().union(*shared.values()) - {account.pk}
    most = max(len(accounts) for accounts in shared.values())
    result.hits.append(
        RuleHit(
            Rule.SHARED_BUNDLE,
            settings.ABUSE_POINTS_SHARED_BUNDLE,
            linked,
            f"{len(shared)} bundle(s) built by more than {minimum} accounts "
            f"(up to {most}{'+' if len(rows) == CANDIDATE_LIMIT else ''}): "
            + ", ".join(sorted(shared)),
        )
    )
    return linked


def _shared_ip(account, result: Assessment, since) -> set[int]:
    if not result.ips:
        return set()
    linked = set(
        _other_signals(account)
        .filter(ip__in=result.ips, created_at__gte=since)
        .values_list("account_id", flat=True)
        .distinct()[:CANDIDATE_LIMIT]
    )
    if linked:
        result.hits.append(
            RuleHit(
                Rule.SHARED_IP,
                settings.ABUSE_POINTS_SHARED_IP,
                linked,
                f"{len(result.ips)} IP address(es) of this account used by {len(linked)} other "
                f"account(s) in the last {settings.ABUSE_IP_WINDOW_DAYS} days",
            )
        )
    return linked


def _similar_app_names(account, result: Assessment, names, stems, linked, since) -> None:
    if not names:
        return
    # Candidates: names with the same stem, and every name of the accounts already linked.
    candidates = Q(app_name_stem__in=stems)
    if linked:
        candidates |= Q(account_id__in=linked) & ~Q(app_name_key="")
    rows = (
        _other_signals(account)
        .filter(candidates, created_at__gte=since)
        .values_list("account_id", "app_name_key")
        .distinct()[:CANDIDATE_LIMIT]
    )
    percent = settings.ABUSE_APP_NAME_SIMILARITY_PERCENT
    similar = {
        account_id
        for account_id, name_key in rows
        if any(names_similar(name_key, own, percent) for own in names)
    }
    if similar:
        result.hits.append(
            RuleHit(
                Rule.SIMILAR_APP_NAME,
                settings.ABUSE_POINTS_SIMILAR_APP_NAME,
                similar,
                f"app names at least {percent}% similar to those of {len(similar)} other "
                "account(s)",
            )
        )


def _same_day_accounts(account, result: Assessment) -> None:
    linked = result.linked_accounts
    if not linked:
        return
    created = account.created_at.astimezone(dt.UTC)
    day = dt.datetime(created.year, created.month, created.day, tzinfo=dt.UTC)
    same_day = set(
        Account.objects.filter(
            pk__in=linked, created_at__gte=day, created_at__lt=day + dt.timedelta(days=1)
        ).values_list("pk", flat=True)
    )
    if same_day:
        result.hits.append(
            RuleHit(
                Rule.SAME_DAY_ACCOUNTS,
                settings.ABUSE_POINTS_SAME_DAY_ACCOUNTS,
                same_day,
                f"created on {day:%Y-%m-%d} (UTC) like {len(same_day)} linked account(s)",
            )
        )


def _build_burst(account, result: Assessment, last_submission) -> None:
    """N or more submissions within M minutes of each other, in a stretch that includes this
    account's latest one, counting its own and those of the accounts it is linked to."""
    if last_submission is None:
        return
    span = dt.timedelta(minutes=settings.ABUSE_BURST_MINUTES)
    rows = list(
        AbuseSignal.objects.filter(
            kind=SignalKind.SUBMISSION,
            account_id__in=[account.pk, *result.linked_accounts],
            created_at__gte=last_submission - span,
            created_at__lte=last_submission + span,
        )
        .order_by("created_at")
        .values_list("created_at", "account_id")[:CANDIDATE_LIMIT]
    )
    times = [at for at, _ in rows]
    best: list[int] = []
    for start, started_at in enumerate(times):
        if started_at > last_submission:
            break
        if started_at + span < last_submission:
            continue
        end = bisect.bisect_right(times, started_at + span, lo=start)
        if end - start > len(best):
            best = [account_id for _, account_id in rows[start:end]]
    if len(best) >= settings.ABUSE_BURST_BUILDS:
        result.hits.append(
            RuleHit(
                Rule.BUILD_BURST,
                settings.ABUSE_POINTS_BUILD_BURST,
                set(best) - {account.pk},
                f"{len(best)} builds submitted within {settings.ABUSE_BURST_MINUTES} minutes "
                f"(threshold {settings.ABUSE_BURST_BUILDS})",
            )
        )
