"""Abuse scoring cost per build submission with 100,000 signals in the database.

Measures ``abuse.services.check_submission`` — what the engine runs before it creates a
build job: record the submission signal, evaluate the five rules, store the score and
refresh the account's flag — for accounts of every shape: ordinary ones, members of farms
(shared IP, bundle, similar names, same-day accounts), users behind one carrier NAT address,
builders of a template bundle thousands of accounts share, and owners of a common app name.
The rows it makes are deleted afterwards.
"""

import datetime as dt
import hashlib
import os
import random
import time
from collections import defaultdict
from pathlib import Path

from django.db import connection
from django.utils import timezone

from abuse.models import AbuseSignal, Flag, ReviewAction, Score
from abuse.scoring import assess, normalise_app_name
from abuse.services import check_submission
from builds import registry
from builds.models import Account

SIGNALS = 100_000
ACCOUNTS = 20_000
TARGET_P95_MS = 5.0
BENCH_KIND = "bench.abuse.build"
PREFIX = "abuse-bench"
WORDS = [
    "torch",
    "weather",
    "recipe",
    "budget",
    "fitness",
    "tracker",
    "notes",
    "chat",
    "photo",
    "music",
    "runner",
    "garden",
    "travel",
    "habit",
    "quiz",
    "scanner",
    "wallet",
    "timer",
    "yoga",
    "chess",
    "pizza",
    "bike",
    "route",
    "school",
    "class",
    "team",
    "coach",
    "shop",
    "market",
    "book",
    "story",
    "comic",
    "radio",
    "focus",
    "sleep",
    "water",
    "plant",
    "pet",
    "doctor",
    "clinic",
    "bank",
    "crypto",
    "stock",
    "news",
    "sport",
    "goal",
    "score",
    "map",
    "trip",
    "hotel",
    "taxi",
    "food",
    "diet",
    "meal",
    "code",
    "dev",
    "lab",
]


def _digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _build_kind(context):
    return None


def _fill(rng: random.Random, log) -> tuple[dict[str, list[Account]], dict[int, tuple]]:
    """Accounts of five shapes and their signals; returns them and each one's (IP, app name)."""
    now = timezone.now()
    accounts = Account.objects.bulk_create(
        [
            Account(
                name=f"{PREFIX} {n}",
                slug=f"{PREFIX}-{n}",
                created_at=now - dt.timedelta(days=rng.randint(0, 400), minutes=n % 1440),
            )
            for n in range(ACCOUNTS)
        ],
        batch_size=2000,
    )
    shapes = {"ordinary": accounts[:14_000]}
    farms = [accounts[14_000 + 6 * f : 14_000 + 6 * (f + 1)] for f in range(200)]  # 1,200
    shapes["farm"] = [member for farm in farms for member in farm]
    shapes["nat"] = accounts[15_200:16_700]  # one carrier-NAT address, 1,500 accounts
    shapes["template"] = accounts[16_700:18_700]  # one template bundle, 2,000 accounts
    shapes["common_name"] = accounts[18_700:]  # "My App", 1,300 accounts
    nat_ip, template = "100.64.0.1", _digest("expo blank template")
    identity: dict[int, tuple[str, str]] = {}
    rows: list[AbuseSignal] = []

    def add(account, *, bundle="", minutes_ago):
        ip, app_name = identity[account.pk]
        key, stem = normalise_app_name(app_name)
        when = now - dt.timedelta(minutes=minutes_ago)
        rows.append(
            AbuseSignal(
                account=account,
                kind="submission",
                ip=ip,
                app_name=app_name,
                app_name_key=key,
                app_name_stem=stem,
                account_age_days=0,
                created_at=when,
            )
        )
        if bundle:
            rows.append(
                AbuseSignal(account=account, kind="bundle", bundle_hash=bundle, created_at=when)
            )

    def own_ip(account):
        return f"10.{account.pk // 65536 % 256}.{account.pk // 256 % 256}.{account.pk % 256}"

    def own_name():
        return f"{rng.choice(WORDS)} {rng.choice(WORDS)}".title()

    for number, farm in enumerate(farms):
        ip, bundle = f"203.0.{number // 250}.{number % 250}", _digest(f"farm {number}")
        start = rng.randint(0, 40_000)
        Account.objects.filter(pk__in=[member.pk for member in farm]).update(
            created_at=now - dt.timedelta(minutes=start + 60)
        )
        for position, member in enumerate(farm, start=1):
            identity[member.pk] = (ip, f"Torch Light {position}")
            for build in range(4):
                add(member, bundle=bundle, minutes_ago=start + build * 3)
    for member in shapes["nat"]:
        identity[member.pk] = (nat_ip, own_name())
        for _ in range(4):
            add(member, minutes_ago=rng.randint(0, 10_000))
    for member in shapes["template"]:
        identity[member.pk] = (own_ip(member), own_name())
        for _ in range(3):
            add(member, bundle=template, minutes_ago=rng.randint(0, 40_000))
    for member in shapes["common_name"]:
        identity[member.pk] = (own_ip(member), "My App")
        for _ in range(4):
            add(member, minutes_ago=rng.randint(0, 40_000))
    for member in shapes["ordinary"]:
        identity[member.pk] = (own_ip(member), own_name())
    while len(rows) < SIGNALS:
        member = rng.choice(shapes["ordinary"])
        bundle = _digest(f"own {member.pk} {rng.randint(0, 3)}") if rng.random() < 0.5 else ""
        add(member, bundle=bundle, minutes_ago=rng.randint(0, 60 * 24 * 45))
    AbuseSignal.objects.bulk_create(rows[:SIGNALS], batch_size=5000)
    log(f"abuse: {AbuseSignal.objects.count()} signals for {ACCOUNTS} accounts")
    for shape, members in shapes.items():
        shapes[shape] = list(Account.objects.filter(pk__in=[m.pk for m in members]))
    return shapes, identity


def _percentile(samples: list[float], percent: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(percent / 100 * (len(ordered) - 1))))]


class _Clock:
    """Wall time of each call, and the CPU time it took in this thread and in the database
    backend serving it (from /proc, when PostgreSQL runs on this machine): on a machine
    shared with other work the wall time also holds the time spent waiting for a CPU."""

    def __init__(self):
        self.backend = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                path = Path(f"/proc/{cursor.fetchone()[0]}/schedstat")
            self.backend = path if path.exists() else None
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def _backend_ns(self) -> int:
        return int(self.backend.read_text().split()[0]) if self.backend else 0

    def measure(self, shape: str, call) -> None:
        backend, thread = self._backend_ns(), time.thread_time_ns()
        started = time.perf_counter()
        call()
        self.wall[shape].append((time.perf_counter() - started) * 1000)
        work = time.thread_time_ns() - thread + self._backend_ns() - backend
        self.cpu[shape].append(work / 1e6)


def _timed(mix, identity, call) -> _Clock:
    clock = _Clock()
    for shape, account in mix:
        ip, app_name = identity[account.pk]
        meta = {"ip": ip, "app_name": app_name}
        clock.measure(shape, lambda account=account, meta=meta: call(account, meta))
    return clock


def _rows(label: str, timings: dict[str, list[float]], target: float | None) -> list[dict]:
    everything = [ms for samples in timings.values() for ms in samples]
    p50, p95 = _percentile(everything, 50), _percentile(everything, 95)
    return [
        {"name": f"{label} p50", "value": round(p50, 3), "unit": "ms", "target": None, "ok": None},
        {
            "name": f"{label} p95",
            "value": round(p95, 3),
            "unit": "ms",
            "target": f"<= {target:g} ms" if target else None,
            "ok": p95 <= target if target else None,
        },
    ]


def run(ctx) -> list[dict]:
    registry.register_kind(BENCH_KIND, _build_kind, description="Abuse benchmark build.")
    rng = random.Random(7)
    shapes, identity = _fill(rng, ctx.log)
    if connection.vendor == "postgresql":  # the state autovacuum keeps a live table in
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE abuse_abusesignal")
            cursor.execute("ANALYZE builds_account")
    per_shape = 40 if ctx.quick else 200
    mix = [(shape, rng.choice(shapes[shape])) for shape in shapes for _ in range(per_shape)]
    rng.shuffle(mix)
    for _, account in mix[:20]:  # warm the connection and the caches
        check_submission(account, BENCH_KIND, {}, {"ip": "192.0.2.1", "app_name": "Warm Up"})

    # What a submission pays: record the signal, score, store, flag, commit.
    submissions = _timed(
        mix, identity, lambda account, meta: check_submission(account, BENCH_KIND, {}, meta)
    )
    # The rules alone (reads only), for the same accounts.
    rules = _timed(mix, identity, lambda account, meta: assess(account))
    for label, clock in (("submission check", submissions), ("rules only", rules)):
        for kind, timings in (("wall", clock.wall), ("cpu", clock.cpu)):
            ctx.log(
                f"abuse: {label} {kind} p95 by shape: "
                + ", ".join(f"{shape} {_percentile(s, 95):.2f} ms" for shape, s in timings.items())
            )
    ctx.log(
        f"abuse: {len(mix)} submissions scored, {Flag.objects.count()} accounts flagged; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    ReviewAction.objects.filter(account__slug__startswith=PREFIX).delete()
    Flag.objects.filter(account__slug__startswith=PREFIX).delete()
    Score.objects.filter(account__slug__startswith=PREFIX).delete()
    AbuseSignal.objects.filter(account__slug__startswith=PREFIX).delete()
    Account.objects.filter(slug__startswith=PREFIX).delete()

    signals = f"{SIGNALS // 1000}k signals"
    rows = _rows(f"abuse scoring per submission, {signals}", submissions.wall, TARGET_P95_MS)
    rows += _rows(f"abuse rules only (reads), {signals}", rules.wall, None)
    if submissions.backend:
        cpu = "CPU time, app + database"
        rows += _rows(f"abuse scoring per submission, {cpu}", submissions.cpu, None)
    return rows
