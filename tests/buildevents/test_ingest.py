import uuid

import pytest

from buildevents.choices import RunStatus
from buildevents.models import BuildRun, BuildRunEvent
from builds.choices import TokenScope
from builds.services import revoke_api_token
from tests.support.build_events import EventsClient, at, event, started

pytestmark = pytest.mark.django_db


def run_of(run_id) -> BuildRun:
    return BuildRun.objects.get(run_id=run_id)


def kinds(run_id) -> list[str]:
    return list(BuildRunEvent.objects.filter(run__run_id=run_id).values_list("event", flat=True))


# --- each event kind ---------------------------------------------------------------------
def test_build_started_creates_the_run_with_its_details(events_client, run_id):
    response = events_client.send(started(run_id, ts=at(0)))

    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "runs": {str(run_id): "running"}}
    run = run_of(run_id)
    assert run.account == events_client.account
    assert (run.env, run.origin, run.command, run.host, run.pid) == (
        "prod",
        "server",
        "npm run build:deploy",
        "ci-1",
        4242,
    )
    assert (run.repo, run.branch, run.commit[:6]) == (
        "git@example.com:shop/app.git",
        "main",
        "012345",
    )
    assert run.status == RunStatus.RUNNING
    assert run.started_at.isoformat() == "2026-03-02T09:00:00+00:00"
    assert kinds(run_id) == ["build_started"]


def test_stage_events_move_the_current_stage(events_client, run_id):
    events_client.send(started(run_id, ts=at(0)))

    events_client.send(event(run_id, "stage_started", stage="Backend Clean", ts=at(1)))
    assert run_of(run_id).current_stage == "Backend Clean"

    events_client.send(
        event(run_id, "stage_completed", stage="Backend Clean", durationMs=4000, ts=at(5))
    )
    run = run_of(run_id)
    assert run.current_stage == ""
    assert run.status == RunStatus.RUNNING
    completed = BuildRunEvent.objects.get(run=run, event="stage_completed")
    assert (completed.stage, completed.duration_ms) == ("Backend Clean", 4000)


def test_build_completed_ends_the_run_with_its_duration(events_client, run_id):
    events_client.send(started(run_id, ts=at(0)))

    response = events_client.send(
        event(run_id, "build_completed", durationMs=151000, ts=at(151), payload={"exitCode": 0})
    )

    assert response.json()["runs"] == {str(run_id): "success"}
    run = run_of(run_id)
    assert (run.status, run.duration_ms, run.exit_code) == (RunStatus.SUCCESS, 151000, 0)
    assert run.ended_at.isoformat() == "2026-03-02T09:02:31+00:00"


def test_build_failed_records_the_exit_code_and_reason(events_client, run_id):
    events_client.send(started(run_id, ts=at(0)))

    events_client.send(
        event(run_id, "build_failed", message="exit code 2", ts=at(30), payload={"exitCode": 2})
    )

    run = run_of(run_id)
    assert (run.status, run.exit_code, run.status_reason) == (RunStatus.FAILED, 2, "exit code 2")
    assert run.duration_ms == 30000  # from its start, as none was given


def test_heartbeats_touch_the_run_without_storing_rows(events_client, run_id):
    events_client.send(started(run_id))
    BuildRun.objects.filter(run_id=run_id).update(last_heartbeat_at="2020-01-01T00:00:00Z")

    for _ in range(3):
        assert events_client.send(event(run_id, "heartbeat")).status_code == 200

    assert kinds(run_id) == ["build_started"]
    assert run_of(run_id).last_heartbeat_at.year > 2020


# --- batch, idempotency, order ----------------------------------------------------------
def test_a_batch_is_stored_in_one_request(events_client, run_id):
    other = uuid.uuid4()
    batch = [
        started(run_id, ts=at(0)),
        event(run_id, "stage_started", stage="Build", ts=at(1)),
        event(run_id, "heartbeat", ts=at(2)),
        event(run_id, "stage_completed", stage="Build", ts=at(3)),
        event(run_id, "build_completed", ts=at(4)),
        started(other, ts=at(0), command="make release"),
    ]

    response = events_client.send(batch)

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 6,
        "duplicates": 0,
        "runs": {str(run_id): "success", str(other): "running"},
    }
    assert kinds(run_id) == ["build_started", "stage_started", "stage_completed", "build_completed"]
    assert run_of(other).command == "make release"


def test_a_repeated_event_id_is_accepted_and_ignored(events_client, run_id):
    first = event(run_id, "stage_started", stage="Build", eventId="e-1", ts=at(1))

    assert events_client.send(first).json()["accepted"] == 1
    again = events_client.send([first, first])

    assert again.status_code == 200
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 2
    assert kinds(run_id) == ["stage_started"]


def test_the_same_event_id_in_another_run_is_another_event(events_client, run_id):
    events_client.send(event(run_id, "build_started", eventId="same"))
    events_client.send(event(uuid.uuid4(), "build_started", eventId="same"))

    assert BuildRunEvent.objects.filter(event_id="same").count() == 2


def test_events_before_build_started_create_the_run(events_client, run_id):
    events_client.send(event(run_id, "stage_started", stage="Install", ts=at(10)))
    run = run_of(run_id)
    assert (run.status, run.current_stage, run.command) == (RunStatus.RUNNING, "Install", "")

    events_client.send(started(run_id, ts=at(0)))

    run = run_of(run_id)
    assert run.started_at.isoformat() == "2026-03-02T09:00:00+00:00"
    assert run.command == "npm run build:deploy"
    assert run.current_stage == "Install"


def test_out_of_order_events_in_a_batch_are_applied_in_time_order(events_client, run_id):
    batch = [
        event(run_id, "stage_completed", stage="B", ts=at(9)),
        event(run_id, "stage_started", stage="B", ts=at(5)),
        event(run_id, "stage_completed", stage="A", ts=at(4)),
        started(run_id, ts=at(0)),
        event(run_id, "stage_started", stage="A", ts=at(1)),
        event(run_id, "stage_started", stage="C", ts=at(10)),
    ]

    events_client.send(batch)

    assert run_of(run_id).current_stage == "C"
    stored = BuildRunEvent.objects.filter(run__run_id=run_id)
    assert [(row.event, row.stage) for row in stored] == [
        ("build_started", ""),
        ("stage_started", "A"),
        ("stage_completed", "A"),
        ("stage_started", "B"),
        ("stage_completed", "B"),
        ("stage_started", "C"),
    ]


def test_a_late_stage_event_does_not_move_the_stage_back(events_client, run_id):
    events_client.send(event(run_id, "stage_started", stage="Deploy", ts=at(20)))

    events_client.send(event(run_id, "stage_started", stage="Build", ts=at(5)))

    assert run_of(run_id).current_stage == "Deploy"


def test_completion_arriving_first_still_gives_a_finished_run(events_client, run_id):
    events_client.send(event(run_id, "build_completed", durationMs=60000, ts=at(60)))

    events_client.send(started(run_id, ts=at(0)))

    run = run_of(run_id)
    assert run.status == RunStatus.SUCCESS
    assert run.started_at.isoformat() == "2026-03-02T09:00:00+00:00"
    assert run.command == "npm run build:deploy"


def test_a_finished_run_stays_finished(events_client, run_id):
    events_client.send([started(run_id, ts=at(0)), event(run_id, "build_failed", ts=at(5))])
    before = run_of(run_id)

    events_client.send(event(run_id, "heartbeat", ts=at(6)))
    events_client.send(event(run_id, "stage_started", stage="Zombie", ts=at(7)))
    events_client.send(event(run_id, "build_completed", ts=at(8)))

    run = run_of(run_id)
    assert run.status == RunStatus.FAILED
    assert run.current_stage == ""
    assert run.last_heartbeat_at == before.last_heartbeat_at  # a late heartbeat revives nothing
    assert kinds(run_id)[-2:] == ["stage_started", "build_completed"]  # recorded all the same


def test_a_stale_run_can_still_complete(events_client, run_id):
    events_client.send(started(run_id, ts=at(0)))
    BuildRun.objects.filter(run_id=run_id).update(status=RunStatus.STALE, status_reason="x")

    events_client.send(event(run_id, "build_completed", ts=at(600)))

    run = run_of(run_id)
    assert (run.status, run.status_reason) == (RunStatus.SUCCESS, "")


def test_a_stale_run_that_speaks_again_is_running(events_client, run_id):
    events_client.send(started(run_id, ts=at(0)))
    BuildRun.objects.filter(run_id=run_id).update(status=RunStatus.STALE)

    events_client.send(event(run_id, "heartbeat"))

    assert run_of(run_id).status == RunStatus.RUNNING


def test_a_run_of_another_account_is_refused(events_client, run_id, free_account, token_for):
    events_client.send(started(run_id))
    intruder = EventsClient()
    intruder.credentials(HTTP_X_BUILD_TOKEN=token_for(free_account))

    response = intruder.send(event(run_id, "build_failed"))

    assert response.status_code == 409
    assert response.json()["error"]["fields"] == {"runId": "belongs to another account"}
    assert run_of(run_id).status == RunStatus.RUNNING


# --- authentication, rate limit, size ------------------------------------------------------
def test_missing_token_is_401(run_id, clear_cache):
    response = EventsClient().send(started(run_id))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert "X-Build-Token" in response["WWW-Authenticate"]


@pytest.mark.parametrize("token", ["nonsense", "bh_abc", "bh_0123456789ab_wrongsecret"])
def test_bad_tokens_are_401(token, run_id, clear_cache, db):
    client = EventsClient()
    client.credentials(HTTP_X_BUILD_TOKEN=token)

    response = client.send(started(run_id))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert not BuildRun.objects.exists()


def test_a_revoked_token_is_401(events_client, run_id):
    revoke_api_token(events_client.account.api_tokens.get())

    assert events_client.send(started(run_id)).status_code == 401


def test_a_token_without_events_write_is_403(pro_account, token_for, run_id, clear_cache):
    client = EventsClient()
    client.credentials(HTTP_X_BUILD_TOKEN=token_for(pro_account, [TokenScope.BUILDS_WRITE]))

    response = client.send(started(run_id))

    assert response.status_code == 403
    assert "events:write" in response.json()["error"]["message"]


def test_a_bearer_header_is_not_a_build_token(pro_account, token_for, run_id, clear_cache):
    client = EventsClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(pro_account)}")

    assert client.send(started(run_id)).status_code == 401


def test_rate_limited_posts_get_429_with_retry_after(events_client, run_id, settings):
    settings.BUILD_EVENTS_RATE_LIMIT = "2/m"

    codes = [events_client.send(event(run_id, "heartbeat")).status_code for _ in range(3)]

    assert codes == [200, 200, 429]
    limited = events_client.send(event(run_id, "heartbeat"))
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60


def test_a_body_over_a_megabyte_is_413(events_client, run_id):
    batch = [event(run_id, "stage_started", stage="s", message="x" * 8000) for _ in range(140)]

    response = events_client.send(batch)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not BuildRun.objects.exists()


def test_a_body_read_past_the_limit_is_refused_without_trusting_content_length(settings):
    """A chunked body has no Content-Length: the bytes read are counted too."""
    settings.BUILD_EVENTS_MAX_BODY_BYTES = 100
    from buildevents.validation import BodyTooLarge, parse_body

    with pytest.raises(BodyTooLarge) as refused:
        parse_body(b"[" + b" " * 200 + b"]")
    assert refused.value.status == 413


def test_get_is_405(events_client):
    response = events_client.get("/api/v1/internal/build-events/")

    assert response.status_code == 405


def test_queries_per_batch_do_not_grow_with_its_events(events_client, staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def batch(stages):
        events = []
        for _ in range(2):
            run = uuid.uuid4()
            events.append(started(run, eventId=str(uuid.uuid4())))
            for index in range(stages):
                name = f"stage {index}"
                events.append(event(run, "stage_started", stage=name, eventId=str(uuid.uuid4())))
                events.append(event(run, "heartbeat"))
                events.append(event(run, "stage_completed", stage=name))
            events.append(event(run, "build_completed"))
        return events

    events_client.send(batch(1))  # the token's first use writes its last_used_at
    counts = []
    # 20 stages stay within one INSERT on SQLite too (999 parameters at most).
    for stages in (2, 20):
        with CaptureQueriesContext(connection) as queries:
            assert events_client.send(batch(stages)).status_code == 200
        counts.append(len(queries))

    assert counts[0] == counts[1]
    assert counts[1] <= 20
