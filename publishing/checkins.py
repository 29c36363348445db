"""Device check-ins: which release each device runs and was offered, and the failures its
client reports, recorded without a database write on the request path.

The update views (and the ASGI edge in front of them) only append a tuple to this process's
buffer: no I/O, O(1), no lock, so it is safe to call from the event loop. A daemon thread per
process writes the buffer every ``CHECKIN_FLUSH_SECONDS``, or as soon as
``CHECKIN_BATCH_SIZE`` check-ins wait, in a few bulk statements; then publishing.health
judges the releases the batch touched. ``flush()`` does the same at once (tests, process
exit). A crash loses at most the check-ins of the last interval.

What a device runs is named differently by each protocol (a bundle's sha256, an Expo
manifest id, a CodePush label or package hash); the names are mapped to releases when the
batch is written, with one query for the app environments in it.
"""

import atexit
import datetime as dt
import logging
import os
import re
import threading
import time
from collections import deque
from typing import NamedTuple

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Max, Q

from publishing import expo, health
from publishing.choices import CheckinProtocol, DeviceOutcome
from publishing.models import App, DeviceCheckin, Release, ReleaseCheckinCount, ReleaseDevice

logger = logging.getLogger("buildhub.checkins")

BUILDHUB, EXPO, CODEPUSH = CheckinProtocol.values
CODEPUSH_LABEL = re.compile(r"^v\d{1,9}$")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DEVICE_ID_LENGTH = 128
WRITE_BATCH = 1000  # rows per INSERT
REMEMBERED_ENVIRONMENTS = 10_000  # release names kept per process (see _release_names)


class Checkin(NamedTuple):
    """One check-in or client report as the request path saw it (mapped when written)."""

    protocol: str
    app_id: int
    env: str
    platform: str
    device_id: str
    running: str  # the protocol's name for the update the device runs ("": embedded/none)
    offered_release_id: int | None
    failed: str  # the update(s) the client reports failing (Expo's list is parsed later)
    fatal_error: bool  # Expo: the client reports a fatal error of the update it runs
    succeeded: str  # CodePush: the label the client reports installed
    is_check: bool  # an update check (False: a report, which changes no device row)
    seen_at: float  # time.time()


_buffer: deque = deque(maxlen=settings.CHECKIN_MAX_BUFFERED)
_wake = threading.Event()
_stop = threading.Event()
_flush_lock = threading.Lock()
_start_lock = threading.Lock()
_flusher: threading.Thread | None = None
_flusher_pid: int | None = None
_dropped = 0


# --- the request path: append only ---------------------------------------------------------
def buildhub_check(
    app_id: int,
    env: str,
    platform: str,
    device_id: str,
    current_sha256: str,
    offered_release_id: int | None,
) -> None:
    """A BuildHub update check: the device runs the bundle with ``current_sha256``."""
    _check(BUILDHUB, app_id, env, platform, device_id, current_sha256, offered_release_id)


def expo_check(app_id: int, env: str, platform: str, headers, offered_release_id: int | None):
    """An Expo Updates manifest request; ``headers`` gets case-insensitively (as
    ``request.headers``). The embedded update is no release; failures come from
    ``expo-recent-failed-update-ids`` (a structured-headers list, parsed when written) and
    ``expo-fatal-error`` (held against the update it runs)."""
    current = (headers.get("expo-current-update-id") or "").strip().lower()
    embedded = (headers.get("expo-embedded-update-id") or "").strip().lower()
    _check(
        EXPO,
        app_id,
        env,
        platform,
        (headers.get("eas-client-id") or "").strip(),
        "" if current == embedded else current[:64],
        offered_release_id,
        failed=(headers.get("expo-recent-failed-update-ids") or "")[:4096],
        fatal_error=bool(headers.get("expo-fatal-error")),
    )


def codepush_check(app_id: int, env: str, platform: str, query: dict, offered_release_id):
    """A CodePush update check (snake_case ``query``): the device runs ``label`` /
    ``package_hash`` (neither: the binary's own bundle)."""
    _check(
        CODEPUSH,
        app_id,
        env,
        platform,
        str(query.get("client_unique_id") or ""),
        _codepush_name(query.get("label"), query.get("package_hash")),
        offered_release_id,
    )


def codepush_report(app_id: int, env: str, platform: str, status: str, label: str, client_id):
    """A CodePush deploy report: ``DeploymentSucceeded`` or ``DeploymentFailed`` of ``label``."""
    label = _codepush_name(label, "")
    if not label or status not in ("DeploymentSucceeded", "DeploymentFailed"):
        return
    failed = status == "DeploymentFailed"
    _record(
        Checkin(
            CODEPUSH,
            app_id,
            env,
            platform,
            str(client_id or "")[:DEVICE_ID_LENGTH],
            "",
            None,
            label if failed else "",
            False,
            "" if failed else label,
            False,
            time.time(),
        )
    )


def _check(
    protocol, app_id, env, platform, device_id, running, offered, *, failed="", fatal_error=False
) -> None:
    """An update check of any protocol, as the request path saw it."""
    device_id = device_id[:DEVICE_ID_LENGTH]
    checkin = Checkin(
        protocol, app_id, env, platform, device_id, running, offered, failed, fatal_error, "", True,
        time.time(),
    )  # fmt: skip
    _record(checkin)


def _codepush_name(label, package_hash) -> str:
    label, package_hash = str(label or ""), str(package_hash or "")
    if CODEPUSH_LABEL.match(label):
        return label
    return f"#{package_hash[:64]}" if package_hash else ""


def _record(checkin: Checkin) -> None:
    global _dropped
    if len(_buffer) == _buffer.maxlen:
        _dropped += 1  # the oldest goes: the database has been unreachable for a while
    _buffer.append(checkin)
    if len(_buffer) >= settings.CHECKIN_BATCH_SIZE and not _wake.is_set():
        _wake.set()
    if _flusher_pid != os.getpid():
        _start_flusher()


# --- the flusher ---------------------------------------------------------------------------
def _start_flusher() -> None:
    """This process's flusher thread, started with its first check-in (after a fork too)."""
    global _flusher, _flusher_pid
    interval = settings.CHECKIN_FLUSH_SECONDS
    if interval <= 0:
        return
    with _start_lock:
        if _flusher_pid == os.getpid():
            return
        _stop.clear()
        _flusher = threading.Thread(
            target=_run, args=(interval,), name="checkin-flusher", daemon=True
        )
        _flusher.start()
        _flusher_pid = os.getpid()
    atexit.register(flush)


def _run(interval: float) -> None:
    while not _stop.is_set():
        _wake.wait(interval)
        _wake.clear()
        try:
            flush()
        except Exception:
            logger.exception("check-ins could not be written; this batch is lost")
        finally:
            close_old_connections()
    close_old_connections()


def stop() -> None:
    """Stop this process's flusher thread (what is buffered stays until ``flush()``)."""
    global _flusher, _flusher_pid
    with _start_lock:
        thread, _flusher, _flusher_pid = _flusher, None, None
        _stop.set()
        _wake.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def discard() -> int:
    """Drop what is buffered without writing it, and the release names remembered (tests
    start from nothing)."""
    with _flush_lock:
        count = len(_buffer)
        _buffer.clear()
        _names.clear()
        return count


def flush() -> int:
    """Write the buffered check-ins now; returns how many there were."""
    global _dropped
    with _flush_lock:
        batch = []
        for _ in range(len(_buffer)):
            try:
                batch.append(_buffer.popleft())
            except IndexError:
                break
        if _dropped:
            logger.warning("%s check-ins dropped: the buffer was full", _dropped)
            _dropped = 0
        if batch:
            _write(batch)
        return len(batch)


# --- writing a batch -----------------------------------------------------------------------
def _write(batch: list[Checkin]) -> None:
    app_ids = {checkin.app_id for checkin in batch}
    apps = dict(
        App.objects.filter(pk__in=app_ids).order_by().values_list("pk", "failure_threshold_percent")
    )
    batch = [checkin for checkin in batch if checkin.app_id in apps]  # deleted apps
    names = _release_names({(checkin.app_id, checkin.env) for checkin in batch})

    devices: dict[tuple, tuple] = {}  # (app, env, device) → (checkin, running, offered)
    tried: dict[tuple, float] = {}  # (release, outcome, device) → first seen
    counts: dict[tuple, list[int]] = {}  # (release, hour) → checks, offered, failures, successes
    for checkin in batch:
        known = names.get((checkin.app_id, checkin.env), {})
        hour = int(checkin.seen_at // 3600) * 3600
        running = _release_of(checkin.protocol, checkin.platform, checkin.running, known)
        offered = checkin.offered_release_id if checkin.offered_release_id in known else None
        failed = _failed_releases(checkin, known, running)
        succeeded = _release_of(CODEPUSH, checkin.platform, checkin.succeeded, known)
        if checkin.is_check:
            if running is not None:
                counts.setdefault((running, hour), [0, 0, 0, 0])[0] += 1
            if offered is not None:
                counts.setdefault((offered, hour), [0, 0, 0, 0])[1] += 1
        for failed_id in failed:
            counts.setdefault((failed_id, hour), [0, 0, 0, 0])[2] += 1
        if succeeded is not None:
            counts.setdefault((succeeded, hour), [0, 0, 0, 0])[3] += 1
        if not checkin.device_id:
            continue  # counted, but no device to follow
        if checkin.is_check:
            key = (checkin.app_id, checkin.env, checkin.device_id)
            previous = devices.get(key)
            if previous is None or previous[0].seen_at <= checkin.seen_at:
                devices[key] = (checkin, running, offered)
        outcomes = [(running, DeviceOutcome.INSTALLED), (succeeded, DeviceOutcome.INSTALLED)]
        outcomes += [(release_id, DeviceOutcome.FAILED) for release_id in failed]
        for release_id, outcome in outcomes:
            if release_id is not None:
                key = (release_id, outcome, checkin.device_id)
                tried[key] = min(tried.get(key, checkin.seen_at), checkin.seen_at)

    with transaction.atomic():
        # Sorted, so two processes writing the same rows lock them in the same order.
        DeviceCheckin.objects.bulk_create(
            [
                DeviceCheckin(
                    app_id=app_id,
                    env=env,
                    device_id=device_id,
                    platform=checkin.platform,
                    protocol=checkin.protocol,
                    running_release_id=running,
                    offered_release_id=offered,
                    last_seen=_aware(checkin.seen_at),
                )
                for (app_id, env, device_id), (checkin, running, offered) in sorted(
                    devices.items(), key=lambda item: item[0]
                )
            ],
            update_conflicts=True,
            unique_fields=["app", "env", "device_id"],
            update_fields=[
                "platform",
                "protocol",
                "running_release",
                "offered_release",
                "last_seen",
            ],
            batch_size=WRITE_BATCH,
        )
        ReleaseDevice.objects.bulk_create(
            [
                ReleaseDevice(
                    release_id=release_id,
                    outcome=outcome,
                    device_id=device_id,
                    first_seen=_aware(seen_at),
                )
                for (release_id, outcome, device_id), seen_at in sorted(tried.items())
            ],
            ignore_conflicts=True,
            batch_size=WRITE_BATCH,
        )
        _add_counts(sorted(counts.items()))

    touched = {key[0] for key in tried} | {key[0] for key in counts}
    judged = {app_id for app_id, threshold in apps.items() if threshold is not None}
    if touched and judged:
        health.judge(touched, judged)


def _add_counts(rows: list[tuple[tuple, list[int]]]) -> None:
    """Add to the hourly counters in one statement per chunk: an INSERT ... ON CONFLICT that
    adds in the database (bulk_create's upsert can only overwrite), the same SQL on
    PostgreSQL and SQLite, so two processes' batches never lose each other's counts."""
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(ReleaseCheckinCount._meta.db_table)
    counted = ("checks", "offered", "failures", "successes")
    columns = ", ".join(quote(name) for name in ("release_id", "hour", *counted))
    adds = ", ".join(
        f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in counted
    )
    per_statement = min(WRITE_BATCH, (connection.features.max_query_params or 6000) // 6)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            params = []
            for (release_id, hour), numbers in chunk:
                params += [release_id, connection.ops.adapt_datetimefield_value(_aware(hour))]
                params += numbers
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values} "  # noqa: S608 - names quoted
                f"ON CONFLICT ({quote('release_id')}, {quote('hour')}) DO UPDATE SET {adds}",
                params,
            )


def _aware(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def _release_of(protocol: str, platform: str, name: str, known: dict) -> int | None:
    if not name:
        return None
    if protocol == BUILDHUB:
        return known.get(("sha256", platform, name))
    if protocol == EXPO:
        return known.get(("expo", name))
    if name.startswith("#"):
        return known.get(("package", platform, name[1:]))
    return known.get(("label", name))


def _failed_releases(checkin: Checkin, known: dict, running: int | None) -> list[int]:
    if checkin.protocol == EXPO:
        named = (known.get(("expo", found.lower())) for found in UUID.findall(checkin.failed))
        failed = {release_id for release_id in named if release_id is not None}
        if not failed and checkin.fatal_error and running is not None:
            failed = {running}
        return sorted(failed)
    found = _release_of(checkin.protocol, checkin.platform, checkin.failed, known)
    return [] if found is None else [found]


_names: dict[tuple[int, str], tuple[int, dict]] = {}


def _release_names(pairs: set[tuple[int, str]]) -> dict[tuple[int, str], dict]:
    """For each (app, environment): every name a device may give one of its releases →
    the release's id (the newest release when several share a bundle or label).

    Kept per process and read again only when an environment has a newer release: one
    small query per batch when nothing was published."""
    if not pairs:
        return {}
    app_ids, envs = {app_id for app_id, _ in pairs}, {env for _, env in pairs}
    newest = {
        (row["app_id"], row["env"]): row["newest"]
        for row in Release.objects.filter(app_id__in=app_ids, env__in=envs)
        .order_by()
        .values("app_id", "env")
        .annotate(newest=Max("id"))
    }
    stale = [
        pair
        for pair in pairs
        if pair in newest and (pair not in _names or _names[pair][0] != newest[pair])
    ]
    if stale:
        if len(_names) + len(stale) > REMEMBERED_ENVIRONMENTS:
            _names.clear()
        fresh: dict[tuple[int, str], dict] = {pair: {} for pair in stale}
        which = Q()
        for app_id, env in stale:
            which |= Q(app_id=app_id, env=env)
        rows = (
            Release.objects.filter(which)
            .order_by("id")
            .values_list("id", "app_id", "env", "manifest", "directive")
        )
        for release_id, app_id, env, manifest, directive in rows:
            known = fresh[(app_id, env)]
            known[release_id] = release_id  # an offered id must be one of these (by int)
            if directive:
                continue
            if manifest.get("version") is not None:
                known[("label", f"v{manifest['version']}")] = release_id
            for platform, bundle in (manifest.get("bundles") or {}).items():
                known[("sha256", platform, bundle.get("sha256"))] = release_id
                known[("expo", expo.manifest_id(release_id, platform))] = release_id
                package = bundle.get("codepush") or {}
                if package.get("package_hash"):
                    known[("package", platform, package["package_hash"])] = release_id
        for pair, known in fresh.items():
            _names[pair] = (newest[pair], known)
    return {pair: _names[pair][1] for pair in pairs if pair in newest}
