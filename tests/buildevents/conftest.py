import datetime as dt
import json
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from buildevents.models import BuildRun, BuildRunEvent
from builds.choices import TokenScope
from builds.services import create_api_token

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


@pytest.fixture
def token_for(db):
    def issue(account, scopes=(TokenScope.EVENTS_WRITE,)):
        return create_api_token(account, name="ci", scopes=list(scopes)).secret

    return issue


@pytest.fixture
def events_client(pro_account, token_for, clear_cache):
    client = EventsClient()
    client.account = pro_account
    client.secret = token_for(pro_account)
    client.credentials(HTTP_X_BUILD_TOKEN=client.secret)
    return client


@pytest.fixture
def run_id():
    return uuid.uuid4()


@pytest.fixture
def staff_client(staff):
    client = APIClient()
    client.force_login(staff)
    return client


@pytest.fixture
def q_sync(monkeypatch):
    """django-q2 tasks run in the calling process, as a worker would run them."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


def now():
    return timezone.now()


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
