"""Read models of build events: live status, a run's timeline and stages, duration trends."""

import datetime as dt
from collections import defaultdict

from django.conf import settings
from django.utils import timezone

from buildevents.choices import LIVE_STATES, STAGE_EVENTS, TERMINAL_STATES, EventKind, RunStatus
from buildevents.models import BuildRun, BuildRunEvent
from buildevents.notifications import format_duration

MAX_TREND_RUNS = 5000  # runs read for one trends answer, newest first


def iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _milliseconds(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def stage_spans(events) -> list[dict]:
    """Stages of a run from its stage events (any order), each with its duration and outcome."""
    spans: list[dict] = []
    open_spans: dict[str, dict] = {}
    for event in sorted(events, key=lambda item: (item.created_at, item.pk or 0)):
        if event.event == EventKind.STAGE_STARTED:
            span = {"stage": event.stage, "startedAt": event.created_at, "completedAt": None}
            span.update(durationMs=None, status="running")
            spans.append(span)
            open_spans[event.stage] = span
        elif event.event == EventKind.STAGE_COMPLETED:
            span = open_spans.pop(event.stage, None)
            if span is None:  # its start never arrived
                span = {"stage": event.stage, "startedAt": None}
                spans.append(span)
            span["completedAt"] = event.created_at
            span["durationMs"] = (
                event.duration_ms
                if event.duration_ms is not None
                else _milliseconds(span["startedAt"], event.created_at)
                if span["startedAt"]
                else None
            )
            exit_code = (event.payload or {}).get("exitCode")
            span["status"] = "failed" if exit_code not in (None, 0) else "done"
    return [
        {**span, "startedAt": iso(span["startedAt"]), "completedAt": iso(span["completedAt"])}
        for span in spans
    ]


def run_summary(run: BuildRun) -> dict:
    return {
        "runId": str(run.run_id),
        "status": run.status,
        "statusReason": run.status_reason,
        "env": run.env,
        "origin": run.origin,
        "command": run.command,
        "host": run.host,
        "pid": run.pid,
        "stage": run.current_stage,
        "repo": run.repo,
        "branch": run.branch,
        "commit": run.commit,
        "startedAt": iso(run.started_at),
        "endedAt": iso(run.ended_at),
        "lastHeartbeatAt": iso(run.last_heartbeat_at),
        "durationMs": run.duration_ms,
        "exitCode": run.exit_code,
    }


def build_status(
    heartbeat_timeout: int | None = None, now: dt.datetime | None = None, account=None
) -> dict:
    """What is building now (of one account, or of all): the newest live run; stale when it
    has been silent too long."""
    timeout = heartbeat_timeout or settings.BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS
    now = now or timezone.now()
    fresh_since = now - dt.timedelta(seconds=timeout)
    runs = BuildRun.objects.filter(status__in=LIVE_STATES)
    if account is not None:
        runs = runs.filter(account=account)
    run = (
        runs.filter(status=RunStatus.RUNNING, last_heartbeat_at__gte=fresh_since)
        .order_by("-started_at")
        .first()
    ) or (
        runs.filter(
            last_heartbeat_at__gte=now
            - dt.timedelta(seconds=settings.BUILD_EVENTS_STALE_VISIBLE_SECONDS)
        )
        .order_by("-last_heartbeat_at")
        .first()
    )
    active = None
    if run is not None:
        silent = max(0, int((now - run.last_heartbeat_at).total_seconds()))
        running = run.status == RunStatus.RUNNING and silent <= timeout
        elapsed = max(0, int((now - run.started_at).total_seconds()))
        stage_events = run.events.filter(event__in=STAGE_EVENTS)
        active = {
            **run_summary(run),
            "status": RunStatus.RUNNING if running else RunStatus.STALE,
            "elapsed": elapsed,
            "elapsedText": format_duration(elapsed * 1000),
            "silentFor": silent,
            "stages": stage_spans(stage_events),
        }
    return {
        "running": bool(active and active["status"] == RunStatus.RUNNING),
        "activeRun": active,
        "heartbeatTimeout": timeout,
        "updatedAt": iso(now),
    }


def percentile(values: list, fraction: float) -> int | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return round(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def _stats(values: list) -> dict:
    return {"count": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}


def duration_trends(
    *,
    last_runs: int = 20,
    days: int = 14,
    command: str = "",
    env: str = "",
    account=None,
    now=None,
) -> dict:
    """p50/p95 of build and stage durations per command (of one account, or of all): over its
    last N finished runs, and per day (UTC) over the last ``days`` days."""
    now = now or timezone.now()
    since = now - dt.timedelta(days=days)
    runs = BuildRun.objects.filter(status__in=TERMINAL_STATES, started_at__gte=since)
    if account is not None:
        runs = runs.filter(account=account)
    if command:
        runs = runs.filter(command=command)
    if env:
        runs = runs.filter(env=env)
    rows = list(
        runs.order_by("-started_at").values_list("pk", "command", "duration_ms", "started_at")[
            :MAX_TREND_RUNS
        ]
    )
    by_command: dict[str, list] = defaultdict(list)
    for row in rows:
        by_command[row[1]].append(row)
    recent_pks = {row[0] for group in by_command.values() for row in group[:last_runs]}
    events_by_run = defaultdict(list)
    for event in BuildRunEvent.objects.filter(run_id__in=recent_pks, event__in=STAGE_EVENTS).only(
        "run_id", "event", "stage", "duration_ms", "created_at", "payload"
    ):
        events_by_run[event.run_id].append(event)

    commands = []
    for name, group in sorted(by_command.items()):
        recent = group[:last_runs]
        stage_durations = defaultdict(list)
        for pk, *_ in recent:
            for span in stage_spans(events_by_run[pk]):
                if span["durationMs"] is not None:
                    stage_durations[span["stage"]].append(span["durationMs"])
        per_day = defaultdict(list)
        for _, _, duration, started_at in group:
            if duration is not None:
                per_day[started_at.astimezone(dt.UTC).date()].append(duration)
        commands.append(
            {
                "command": name,
                "lastRuns": {
                    "runs": len(recent),
                    "build": _stats([row[2] for row in recent if row[2] is not None]),
                    "stages": {stage: _stats(values) for stage, values in stage_durations.items()},
                },
                "daily": [
                    {"date": day.isoformat(), **_stats(values)}
                    for day, values in sorted(per_day.items())
                ],
            }
        )
    return {"lastRuns": last_runs, "days": days, "since": iso(since), "commands": commands}
