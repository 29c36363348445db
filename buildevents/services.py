"""Verbs of build events: ingest what a build script reports, and sweep runs that went silent.

Ingestion is idempotent (a repeated ``eventId`` of a run is ignored) and tolerant of order:
events may arrive late, out of order or before ``build_started`` (the run is created by
whatever comes first). A finished run stays finished; a stale run may still finish.
"""

import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Now
from django.utils import timezone

from buildevents import live, notifications
from buildevents.choices import (
    LIVE_STATES,
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    EventKind,
    NotificationKind,
    RunStatus,
)
from buildevents.models import BuildRun, BuildRunEvent
from buildevents.validation import EventIn
from buildhub import metrics
from buildhub.errors import ServiceError
from builds.models import Account

logger = logging.getLogger("buildhub.buildevents")

STALE_REASON = "heartbeat lost"
# Run fields an event may fill in: build_started sets them, any other event fills blanks.
RUN_DETAILS = ("env", "origin", "command", "host", "pid", "repo", "branch", "commit")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    runs: dict = field(default_factory=dict)  # run id → status after this request


def _apply_details(run: BuildRun, event: EventIn) -> None:
    for name in RUN_DETAILS:
        value = getattr(event, name)
        if value in ("", None):
            continue
        if event.event == EventKind.BUILD_STARTED or getattr(run, name) in ("", None):
            setattr(run, name, value)


def _exit_code(event: EventIn) -> int | None:
    code = event.payload.get("exitCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def apply_event(run: BuildRun, event: EventIn, *, first_start: bool) -> str | None:
    """Fold one event into the run (in memory); returns the notification it calls for."""
    _apply_details(run, event)
    if event.event == EventKind.BUILD_STARTED and event.ts < run.started_at:
        run.started_at = event.ts
    if run.status in TERMINAL_STATES:
        return None  # a finished run only records what arrives late
    if event.event in TERMINAL_EVENTS:
        run.status = TERMINAL_EVENTS[event.event]
        run.ended_at = event.ts
        run.started_at = min(
            run.started_at, event.ts - dt.timedelta(milliseconds=event.duration_ms or 0)
        )
        run.duration_ms = (
            event.duration_ms
            if event.duration_ms is not None
            else int((run.ended_at - run.started_at).total_seconds() * 1000)
        )
        run.exit_code = _exit_code(event)
        run.status_reason = event.message[:200] if run.status == RunStatus.FAILED else ""
        run.current_stage = ""
        run.stage_changed_at = event.ts
        return (
            NotificationKind.BUILD_COMPLETED
            if run.status == RunStatus.SUCCESS
            else NotificationKind.BUILD_FAILED
        )
    if run.status == RunStatus.STALE:
        # It spoke again: the build is alive after all.
        run.status, run.status_reason = RunStatus.RUNNING, ""
    newer = run.stage_changed_at is None or event.ts >= run.stage_changed_at
    if event.event == EventKind.STAGE_STARTED and newer:
        run.current_stage, run.stage_changed_at = event.stage, event.ts
    elif event.event == EventKind.STAGE_COMPLETED and newer and event.stage == run.current_stage:
        run.current_stage, run.stage_changed_at = "", event.ts
    if event.event == EventKind.BUILD_STARTED and first_start:
        return NotificationKind.BUILD_STARTED
    return None


def _lock_runs(account: Account, events_by_run: dict) -> dict:
    """The runs of these events, created when new, locked in one order for this transaction."""
    run_ids = sorted(events_by_run)
    runs = {
        run.run_id: run
        for run in BuildRun.objects.select_for_update()
        .filter(run_id__in=run_ids)
        .order_by("run_id")
    }
    missing = [run_id for run_id in run_ids if run_id not in runs]
    if missing:
        BuildRun.objects.bulk_create(
            [
                BuildRun(
                    run_id=run_id,
                    account=account,
                    started_at=min(event.ts for event in events_by_run[run_id]),
                )
                for run_id in missing
            ],
            ignore_conflicts=True,
        )
        runs.update(
            (run.run_id, run)
            for run in BuildRun.objects.select_for_update()
            .filter(run_id__in=missing)
            .order_by("run_id")
        )
    foreign = sorted(str(run.run_id) for run in runs.values() if run.account_id != account.pk)
    if foreign:
        raise ServiceError(
            f"Run {foreign[0]} belongs to another account.",
            code="conflict",
            status=409,
            fields={"runId": "belongs to another account"},
        )
    return runs


def _save_run(run: BuildRun, before: dict, touched: bool) -> None:
    changed = {
        name: getattr(run, name) for name, value in before.items() if getattr(run, name) != value
    }
    if touched:
        changed["last_heartbeat_at"] = Now()
    if not changed:
        return
    updated = BuildRun.objects.filter(pk=run.pk, status=before["status"]).update(**changed)
    if not updated:
        raise ServiceError(
            "The run changed while these events were applied; send them again.",
            code="conflict",
            status=409,
        )


_TRACKED = (
    *RUN_DETAILS,
    "status",
    "status_reason",
    "started_at",
    "ended_at",
    "duration_ms",
    "exit_code",
    "current_stage",
    "stage_changed_at",
)


@transaction.atomic
def ingest_events(account: Account, events: list[EventIn]) -> IngestResult:
    """Store the events of one request (one or a batch) and move their runs along."""
    received_at = timezone.now()
    events_by_run: dict[uuid.UUID, list[EventIn]] = defaultdict(list)
    for event in events:
        event.ts = event.ts or received_at
        events_by_run[event.run_id].append(event)
    for run_events in events_by_run.values():
        run_events.sort(key=lambda event: event.ts)  # stable: equal times keep posted order

    runs = _lock_runs(account, events_by_run)
    run_pks = [run.pk for run in runs.values()]
    event_ids = [event.event_id for event in events if event.event_id]
    seen = set(
        BuildRunEvent.objects.filter(run_id__in=run_pks, event_id__in=event_ids).values_list(
            "run_id", "event_id"
        )
        if event_ids
        else ()
    )
    started = set(
        BuildRunEvent.objects.filter(run_id__in=run_pks, event=EventKind.BUILD_STARTED)
        .values_list("run_id", flat=True)
        .distinct()
    )

    result = IngestResult()
    rows, announcements = [], []
    for run_id, run_events in events_by_run.items():
        run = runs[run_id]
        before = {name: getattr(run, name) for name in _TRACKED}
        touched = False
        for event in run_events:
            if event.event_id:
                if (run.pk, event.event_id) in seen:
                    result.duplicates += 1
                    continue
                seen.add((run.pk, event.event_id))
            result.accepted += 1
            touched = touched or run.status not in TERMINAL_STATES
            kind = apply_event(run, event, first_start=run.pk not in started)
            if event.event == EventKind.BUILD_STARTED:
                started.add(run.pk)
            if kind:
                announcements.append((kind, run))
            if event.event != EventKind.HEARTBEAT:
                rows.append(
                    BuildRunEvent(
                        run=run,
                        event=event.event,
                        stage=event.stage,
                        message=event.message,
                        duration_ms=event.duration_ms,
                        created_at=event.ts,
                        received_at=received_at,
                        payload=event.payload,
                        event_id=event.event_id or "",
                    )
                )
        _save_run(run, before, touched)
        result.runs[str(run_id)] = run.status
    BuildRunEvent.objects.bulk_create(rows)
    notifications.notify_staff_of([(kind, run, None) for kind, run in announcements])
    if result.accepted:
        transaction.on_commit(live.push_build_status)
        transaction.on_commit(lambda: metrics.BUILD_EVENTS.inc(result.accepted))
    return result


def heartbeat_timeout(seconds: int | None = None) -> dt.timedelta:
    return dt.timedelta(seconds=seconds or settings.BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS)


def sweep_stale_runs(*, timeout: int | None = None, now: dt.datetime | None = None) -> list:
    """Mark running runs silent for longer than the timeout as stale, and tell staff.

    A run whose last event is exactly ``timeout`` old is still running; one a moment older is
    stale. Times come from the database clock unless ``now`` is given.
    """
    limit = heartbeat_timeout(timeout)
    cutoff = (now - limit) if now is not None else Now() - Value(limit)
    stale = []
    candidates = BuildRun.objects.filter(
        status=RunStatus.RUNNING, last_heartbeat_at__lt=cutoff
    ).values_list("pk", flat=True)
    for pk in candidates:
        with transaction.atomic():
            updated = BuildRun.objects.filter(
                pk=pk, status=RunStatus.RUNNING, last_heartbeat_at__lt=cutoff
            ).update(status=RunStatus.STALE, status_reason=STALE_REASON)
            if not updated:
                continue  # it spoke or finished meanwhile
            run = BuildRun.objects.get(pk=pk)
            notifications.notify_staff(NotificationKind.STALE, run, timeout=limit)
            transaction.on_commit(live.push_build_status)
        logger.warning("build run %s is stale: %s", run.run_id, STALE_REASON)
        metrics.BUILD_RUNS_STALE.inc()
        stale.append(run)
    return stale


def active_runs():
    return BuildRun.objects.filter(status__in=LIVE_STATES)
