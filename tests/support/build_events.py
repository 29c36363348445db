"""Build events as build scripts send them, and finished runs as their events leave them."""

import datetime as dt
import json
import uuid

from rest_framework.test import APIClient

from buildevents.models import BuildRun, BuildRunEvent

INGEST_URL = "/api/v1/internal/build-events/"


def at(seconds: float) -> str:
    """An ISO time ``seconds`` from a fixed start, for events with a known order."""
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    return (start + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event(run_id, kind, **fields):
    return {"runId": str(run_id), "event": kind, **fields}


def started(run_id, **fields):
    defaults = {
        "env": "prod",
        "origin": "server",
        "command": "npm run build:deploy",
        "host": "ci-1",
        "pid": 4242,
        "repo": "git@example.com:shop/app.git",
        "branch": "main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
    }
    return event(run_id, "build_started", **{**defaults, **fields})


class EventsClient(APIClient):
    """Posts bodies as build scripts do: raw JSON with the X-Build-Token header."""

    def send(self, body, **extra):
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.post(INGEST_URL, data=data, content_type="application/json", **extra)


def finished_run(account, command, started_at, duration_ms, stages=(), status="success"):
    run = BuildRun.objects.create(
        run_id=uuid.uuid4(),
        account=account,
        command=command,
        env="prod",
        status=status,
        started_at=started_at,
        ended_at=started_at + dt.timedelta(milliseconds=duration_ms),
        duration_ms=duration_ms,
    )
    for name, stage_ms in stages:
        BuildRunEvent.objects.create(
            run=run,
            event="stage_completed",
            stage=name,
            duration_ms=stage_ms,
            created_at=started_at,
        )
    return run
