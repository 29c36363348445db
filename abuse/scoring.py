"""Scoring: five weak signals about an account, summed into one score with a breakdown.

This runs before every build submission, so it is built for a fixed, small cost whatever
the size of the signal table:

- every lookup is an indexed range over a bounded window that reads at most
  ``CANDIDATE_LIMIT`` of the newest matching rows, so an IP shared by thousands of accounts
  (a carrier NAT) or a bundle every template user builds costs the same as a rare one. The
  limit only caps which accounts a breakdown can name; every threshold the rules test is
  far below it;
- three round trips at most: the account's own recent signals; then, in one UNION ALL, the
  other accounts sharing its IPs, bundle hashes and app-name stems; then, only when it is
  linked to others, in one more UNION ALL, their names, creation days and submission times;
- the SQL is written out (and works on PostgreSQL and SQLite alike) because compiling the
  equivalent querysets would cost more than running them.
"""

import bisect
import datetime as dt
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from abuse.choices import Rule, SignalKind
from abuse.models import AbuseSignal
from builds.models import Account

CANDIDATE_LIMIT = 200  # rows per lookup
OWN_SIGNAL_LIMIT = 200  # the account's own newest signals read
OWN_KEY_LIMIT = 10  # its newest IPs, bundle hashes and name stems looked up
LINKED_DETAIL_LIMIT = 50  # linked accounts whose names, age and submissions are read
BREAKDOWN_ACCOUNTS = 50  # accounts a breakdown names per rule (it counts them all)


# --- names ---------------------------------------------------------------------------------
def normalise_app_name(name: str) -> tuple[str, str]:
    """``(key, stem)``: the name's letters and digits in lower case without accents, and the
    key without digits (or the key itself when it is all digits)."""
    decomposed = unicodedata.normalize("NFKD", name or "")
    key = "".join(
        char for char in decomposed if char.isalnum() and not unicodedata.combining(char)
    ).casefold()[:200]
    stem = "".join(char for char in key if not char.isdigit())
    return key, stem or key


def name_bigrams(key: str) -> frozenset[str]:
    """The pairs of neighbouring characters of a normalised name (the name itself if short)."""
    if len(key) < 2:
        return frozenset([key]) if key else frozenset()
    return frozenset(key[i : i + 2] for i in range(len(key) - 1))


def bigrams_similar(first: frozenset, second: frozenset, percent: int) -> bool:
    """Dice similarity of two bigram sets, compared in whole numbers so that the threshold
    is exact: 2·shared / (size + size) ≥ percent / 100."""
    if not first or not second:
        return False
    return 2 * len(first & second) * 100 >= percent * (len(first) + len(second))


def names_similar(first: str, second: str, percent: int) -> bool:
    return bigrams_similar(name_bigrams(first), name_bigrams(second), percent)


class _NameTest:
    """Is a normalised name similar to one of the account's own? Each name compared once."""

    def __init__(self, names: list[str]):
        self.names = names
        self.percent = settings.ABUSE_APP_NAME_SIMILARITY_PERCENT
        self.own = [name_bigrams(name) for name in names]
        self.verdicts: dict[str, bool] = {}

    def __call__(self, name_key: str) -> bool:
        if name_key not in self.verdicts:
            theirs = name_bigrams(name_key)
            self.verdicts[name_key] = any(
                bigrams_similar(theirs, own, self.percent) for own in self.own
            )
        return self.verdicts[name_key]


# --- the result ----------------------------------------------------------------------------
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
            "accounts": sorted(self.accounts)[:BREAKDOWN_ACCOUNTS],
            "account_count": len(self.accounts),
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
            "linked_accounts": sorted(self.linked_accounts)[:BREAKDOWN_ACCOUNTS],
        }


# --- lookups -------------------------------------------------------------------------------
OWN_SQL = (
    "SELECT kind, ip, bundle_hash, app_name_key, app_name_stem, created_at FROM {signals} "
    "WHERE account_id = %s AND created_at >= %s ORDER BY created_at DESC LIMIT {own_limit}"
)
# Every part of a UNION ALL gives (account id, value, created at), and only what its rule
# needs, so that the index answers alone where it can (the partial indexes carry the
# account and, for names, the name key).
OTHERS_SQL = (
    "SELECT account_id, {value} AS value, {null_time} AS created_at FROM {signals} "
    "WHERE {column} = %s AND created_at >= %s AND account_id <> %s "
    "ORDER BY created_at DESC LIMIT {limit}"
)
NAMES_SQL = (
    "SELECT account_id, app_name_key AS value, {null_time} AS created_at FROM {signals} "
    "WHERE account_id IN ({ids}) AND app_name_key <> '' AND created_at >= %s "
    "ORDER BY created_at DESC LIMIT {limit}"
)
SAME_DAY_SQL = (
    "SELECT id, '' AS value, {null_time} AS created_at FROM {accounts} "
    "WHERE id IN ({ids}) AND created_at >= %s AND created_at < %s LIMIT {limit}"
)
SUBMISSIONS_SQL = (
    "SELECT account_id, '' AS value, created_at FROM {signals} "
    "WHERE account_id IN ({ids}) AND kind = %s AND created_at >= %s AND created_at <= %s "
    "ORDER BY created_at LIMIT {limit}"
)


def _sql(template: str, **fields) -> str:
    return template.format(
        signals=AbuseSignal._meta.db_table,
        accounts=Account._meta.db_table,
        limit=CANDIDATE_LIMIT,
        own_limit=OWN_SIGNAL_LIMIT,
        # A typed NULL: inside a derived table an untyped one would be taken for text.
        null_time=f"CAST(NULL AS {connection.data_types['DateTimeField']})",
        **fields,
    )


def _moment(value: dt.datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _aware(value):
    """Raw rows bring SQLite's datetimes as text (naive UTC); PostgreSQL's are aware."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value


def _ids(account_ids) -> str:
    return ",".join(str(int(account_id)) for account_id in account_ids)


def _union_all(parts: list[tuple[str, str, list]]) -> list[tuple]:
    """``(tag, account id, value, created at)`` rows of several separately ordered and
    limited lookups, in one round trip (each part in a derived table, which PostgreSQL and
    SQLite both accept)."""
    if not parts:
        return []
    sql = " UNION ALL ".join(
        f"SELECT '{tag}', part{number}.* FROM ({part_sql}) part{number}"  # noqa: S608 - own tags and SQL
        for number, (tag, part_sql, _) in enumerate(parts)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [param for _, _, params in parts for param in params])
        rows = cursor.fetchall()
    return [(tag, pk, value, None if at is None else _aware(at)) for tag, pk, value, at in rows]


@dataclass
class _Own:
    """The account's own recent signals, newest first, each key at most OWN_KEY_LIMIT."""

    ips: list[str]
    bundle_hashes: list[str]
    names: list[str]
    stems: list[str]
    submissions: list[dt.datetime]


def _own_signals(account: Account, now: dt.datetime, windows: dict) -> _Own:
    with connection.cursor() as cursor:
        cursor.execute(_sql(OWN_SQL), [account.pk, _moment(min(windows.values()))])
        rows = cursor.fetchall()
    ips, hashes, names, stems, submissions = {}, {}, {}, {}, []
    for kind, ip, bundle_hash, name_key, name_stem, created_at in rows:
        created_at = _aware(created_at)
        if ip and created_at >= windows["ip"]:
            ips[ip] = None
        if bundle_hash and created_at >= windows["bundle"]:
            hashes[bundle_hash] = None
        if name_key and created_at >= windows["name"]:
            names[name_key] = None
            stems[name_stem] = None
        if kind == SignalKind.SUBMISSION:
            submissions.append(created_at)
    return _Own(
        *(list(keys)[:OWN_KEY_LIMIT] for keys in (ips, hashes, names, stems)),
        submissions=sorted(submissions),
    )


# --- the rules -----------------------------------------------------------------------------
def assess(account: Account, now: dt.datetime | None = None) -> Assessment:
    now = now or timezone.now()
    windows = {
        "ip": now - dt.timedelta(days=settings.ABUSE_IP_WINDOW_DAYS),
        "bundle": now - dt.timedelta(days=settings.ABUSE_BUNDLE_WINDOW_DAYS),
        "name": now - dt.timedelta(days=settings.ABUSE_APP_NAME_WINDOW_DAYS),
    }
    own = _own_signals(account, now, windows)
    result = Assessment(account.pk, ips=set(own.ips), bundle_hashes=set(own.bundle_hashes))

    def others(tag, column, key, value, since):
        sql = _sql(OTHERS_SQL, column=column, value=value)
        return (tag, sql, [key, _moment(since), account.pk])

    candidates = _union_all(
        [others("ip", "ip", ip, "''", windows["ip"]) for ip in own.ips]
        + [
            others("bundle", "bundle_hash", bundle_hash, "bundle_hash", windows["bundle"])
            for bundle_hash in own.bundle_hashes
        ]
        + [
            others("name", "app_name_stem", stem, "app_name_key", windows["name"])
            for stem in own.stems
        ]
    )
    names_test = _NameTest(own.names)
    bundle_links = _shared_bundle(result, candidates)
    ip_links = _shared_ip(result, candidates)
    similar = {pk for tag, pk, name, _ in candidates if tag == "name" and names_test(name)}
    linked = _closest(candidates, [bundle_links, ip_links, similar])

    day = _utc_day(account.created_at)
    span = dt.timedelta(minutes=settings.ABUSE_BURST_MINUTES)
    latest = own.submissions[-1] if own.submissions else None
    details = []
    if linked:  # what the other rules need to know about the linked accounts, in one trip
        parts = [
            ("day", _sql(SAME_DAY_SQL, ids=_ids(linked)), [_moment(day), _moment(day + ONE_DAY)])
        ]
        if linked - similar and own.names:
            sql = _sql(NAMES_SQL, ids=_ids(linked - similar))
            parts.append(("name", sql, [_moment(windows["name"])]))
        if latest is not None:
            sql = _sql(SUBMISSIONS_SQL, ids=_ids(linked | {account.pk}))
            window = [_moment(latest - span), _moment(latest + span)]
            parts.append(("burst", sql, [SignalKind.SUBMISSION.value, *window]))
        details = _union_all(parts)
    similar |= {pk for tag, pk, name, _ in details if tag == "name" and names_test(name)}
    _similar_app_names(result, similar, names_test.percent)
    _same_day_accounts(result, {pk for tag, pk, *_ in details if tag == "day"}, day)
    if linked:
        submissions = sorted((at, pk) for tag, pk, _, at in details if tag == "burst")
    else:
        submissions = [(at, account.pk) for at in own.submissions]
    _build_burst(account, result, submissions, latest, span)
    return result


ONE_DAY = dt.timedelta(days=1)


def _closest(candidates, link_sets: list[set[int]]) -> set[int]:
    """The linked accounts worth a closer look, at most LINKED_DETAIL_LIMIT: those more
    rules link first, then the most recently seen."""
    linked = set().union(*link_sets)
    if len(linked) <= LINKED_DETAIL_LIMIT:
        return linked
    seen = {}
    for position, (_, account_id, *_) in enumerate(candidates):
        seen.setdefault(account_id, position)
    rank = sorted(
        linked,
        key=lambda pk: (-sum(pk in links for links in link_sets), seen.get(pk, len(seen))),
    )
    return set(rank[:LINKED_DETAIL_LIMIT])


def _utc_day(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)


def _shared_bundle(result: Assessment, candidates) -> set[int]:
    builders = defaultdict(set)
    for tag, account_id, bundle_hash, _ in candidates:
        if tag == "bundle":
            builders[bundle_hash].add(account_id)
    minimum = settings.ABUSE_BUNDLE_MIN_ACCOUNTS
    # Counting this account too: "built by more than N accounts".
    shared = {h: others for h, others in builders.items() if len(others) + 1 > minimum}
    if not shared:
        return set()
    linked = set().union(*shared.values())
    most = max(len(others) for others in shared.values()) + 1
    result.hits.append(
        RuleHit(
            Rule.SHARED_BUNDLE,
            settings.ABUSE_POINTS_SHARED_BUNDLE,
            linked,
            f"{len(shared)} bundle(s) built by more than {minimum} accounts (up to {most}): "
            + ", ".join(sorted(shared)),
        )
    )
    return linked


def _shared_ip(result: Assessment, candidates) -> set[int]:
    linked = {account_id for tag, account_id, *_ in candidates if tag == "ip"}
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


def _similar_app_names(result: Assessment, similar: set[int], percent: int) -> None:
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


def _same_day_accounts(result: Assessment, same_day: set[int], day: dt.datetime) -> None:
    if same_day:
        result.hits.append(
            RuleHit(
                Rule.SAME_DAY_ACCOUNTS,
                settings.ABUSE_POINTS_SAME_DAY_ACCOUNTS,
                same_day,
                f"created on {day:%Y-%m-%d} (UTC) like {len(same_day)} linked account(s)",
            )
        )


def _build_burst(account, result: Assessment, submissions, latest, span) -> None:
    """N or more submissions within M minutes of each other, in a stretch that includes this
    account's latest one, counting its own and those of the accounts it is linked to.

    ``submissions``: ``(created at, account id)`` in time order."""
    if latest is None:
        return
    times = [at for at, _ in submissions]
    best: list[int] = []
    for start, started_at in enumerate(times):
        if started_at > latest:
            break
        if started_at + span < latest:
            continue
        end = bisect.bisect_right(times, started_at + span, lo=start)
        if end - start > len(best):
            best = [account_id for _, account_id in submissions[start:end]]
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
