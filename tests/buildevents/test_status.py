import datetime as dt
import types
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from buildevents import reports
from buildevents.choices import RunStatus
from buildevents.models import BuildRun
from buildevents.services import sweep_stale_runs
from builds.choices import TokenScope
from tests.support.build_events import at, event, finished_run, started

pytestmark = pytest.mark.django_db

STATUS_URL = "/api/v1/admin/build-status/"
RUNS_URL = "/api/v1/admin/build-runs/"


def silent_for(run_id, seconds: float, now=None):
    """Make the run's last event ``seconds`` old."""
    moment = (now or timezone.now()) - dt.timedelta(seconds=seconds)
    BuildRun.objects.filter(run_id=run_id).update(last_heartbeat_at=moment)
    return moment


def test_status_reports_the_running_build_with_its_stages(events_client, staff_client, run_id):
    begin = timezone.now() - dt.timedelta(seconds=151)
    iso = lambda seconds: (begin + dt.timedelta(seconds=seconds)).isoformat()  # noqa: E731
    events_client.send(
        [
            started(run_id, ts=iso(0)),
            event(run_id, "stage_started", stage="Backend Clean", ts=iso(1)),
            event(run_id, "stage_completed", stage="Backend Clean", durationMs=9000, ts=iso(10)),
            event(run_id, "stage_started", stage="Bundle", ts=iso(11)),
        ]
    )

    response = staff_client.get(STATUS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["running"] is True
    active = body["activeRun"]
    assert active["runId"] == str(run_id)
    assert (active["env"], active["command"], active["host"]) == (
        "prod",
        "npm run build:deploy",
        "ci-1",
    )
    assert active["stage"] == "Bundle"
    assert active["status"] == "running"
    assert active["elapsed"] >= 151
    assert active["startedAt"] and active["lastHeartbeatAt"] and body["updatedAt"]
    assert [(s["stage"], s["status"], s["durationMs"]) for s in active["stages"]] == [
        ("Backend Clean", "done", 9000),
        ("Bundle", "running", None),
    ]


def test_status_with_nothing_running(staff_client):
    body = staff_client.get(STATUS_URL).json()

    assert body["running"] is False
    assert body["activeRun"] is None


def test_a_silent_run_is_reported_as_stale_not_running(events_client, staff_client, run_id):
    events_client.send(started(run_id))
    silent_for(run_id, 120)

    body = staff_client.get(STATUS_URL, {"heartbeatTimeout": 90}).json()

    assert body["running"] is False
    assert body["activeRun"]["status"] == "stale"
    assert body["activeRun"]["silentFor"] >= 120
    # The same run with a longer timeout is still running.
    assert staff_client.get(STATUS_URL, {"heartbeatTimeout": 300}).json()["running"] is True


def test_status_staleness_at_the_boundary(events_client, run_id):
    events_client.send(started(run_id))
    now = timezone.now()

    silent_for(run_id, 90, now)
    assert reports.build_status(90, now=now)["running"] is True
    silent_for(run_id, 91, now)
    assert reports.build_status(90, now=now)["running"] is False


@pytest.mark.parametrize("value", ["0", "-3", "soon", "86401"])
def test_a_bad_heartbeat_timeout_is_400(staff_client, value):
    response = staff_client.get(STATUS_URL, {"heartbeatTimeout": value})

    assert response.status_code == 400
    assert "heartbeatTimeout" in response.json()["error"]["fields"]


def test_admin_endpoints_are_staff_only(events_client, api_client_for, pro_account):
    token_client = api_client_for(pro_account)

    assert APIClient().get(STATUS_URL).status_code == 401
    assert token_client.get(STATUS_URL).status_code == 403
    assert token_client.get(RUNS_URL).status_code == 403
    assert events_client.get(STATUS_URL).status_code == 401  # X-Build-Token is for posting


# --- sweeper ----------------------------------------------------------------------------
def test_sweeper_marks_runs_silent_past_the_timeout_and_no_others(events_client, run_id):
    at_limit, just_past, finished = run_id, uuid.uuid4(), uuid.uuid4()
    for each in (at_limit, just_past, finished):
        events_client.send(started(each))
    events_client.send(event(finished, "build_completed"))
    now = timezone.now()
    silent_for(at_limit, 90, now)
    BuildRun.objects.filter(run_id=just_past).update(
        last_heartbeat_at=now - dt.timedelta(seconds=90, microseconds=1000)
    )
    silent_for(finished, 3600, now)

    stale = sweep_stale_runs(timeout=90, now=now)

    assert [run.run_id for run in stale] == [just_past]
    statuses = dict(BuildRun.objects.values_list("run_id", "status"))
    assert statuses == {
        at_limit: RunStatus.RUNNING,
        just_past: RunStatus.STALE,
        finished: RunStatus.SUCCESS,
    }
    assert BuildRun.objects.get(run_id=just_past).status_reason == "heartbeat lost"
    assert sweep_stale_runs(timeout=90, now=now) == []  # nothing twice


def test_sweeper_uses_the_database_clock_and_the_setting(events_client, run_id, settings):
    settings.BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS = 60
    events_client.send(started(run_id))
    silent_for(run_id, 30)
    assert sweep_stale_runs() == []

    silent_for(run_id, 61)
    assert [run.run_id for run in sweep_stale_runs()] == [run_id]


# --- history ----------------------------------------------------------------------------
def make_runs(events_client):
    ids = [uuid.uuid4() for _ in range(4)]
    events_client.send(
        [
            started(ids[0], ts=at(0), env="prod", branch="main"),
            event(ids[0], "build_completed", ts=at(60)),
            started(ids[1], ts=at(100), env="staging", branch="main"),
            event(ids[1], "build_failed", ts=at(130)),
            started(ids[2], ts=at(200), env="prod", branch="feature/x"),
            started(ids[3], ts=at(300), env="dev", branch="main"),
        ]
    )
    return ids


def test_runs_list_is_newest_first_and_filtered(events_client, staff_client):
    ids = make_runs(events_client)

    listing = staff_client.get(RUNS_URL).json()
    assert listing["count"] == 4
    assert [row["runId"] for row in listing["results"]] == [str(i) for i in reversed(ids)]
    assert listing["results"][0]["account"] == events_client.account.slug

    def run_ids(**filters):
        return [row["runId"] for row in staff_client.get(RUNS_URL, filters).json()["results"]]

    assert run_ids(env="prod") == [str(ids[2]), str(ids[0])]
    assert run_ids(status="failed") == [str(ids[1])]
    assert run_ids(branch="feature/x") == [str(ids[2])]
    assert run_ids(env="prod", branch="main") == [str(ids[0])]
    assert len(staff_client.get(RUNS_URL, {"page_size": 2}).json()["results"]) == 2


@pytest.mark.parametrize(("name", "value"), [("env", "production"), ("status", "done")])
def test_runs_list_refuses_unknown_filter_values(staff_client, name, value):
    response = staff_client.get(RUNS_URL, {name: value})

    assert response.status_code == 400
    assert name in response.json()["error"]["fields"]


def test_runs_list_has_a_fixed_number_of_queries(
    events_client, staff_client, django_assert_max_num_queries
):
    make_runs(events_client)

    with django_assert_max_num_queries(6):
        assert staff_client.get(RUNS_URL).status_code == 200


def test_run_detail_has_its_timeline(events_client, staff_client, run_id):
    events_client.send(
        [
            started(run_id, ts=at(0)),
            event(run_id, "stage_started", stage="Install", ts=at(1), eventId="a"),
            event(run_id, "heartbeat", ts=at(2)),
            event(run_id, "stage_completed", stage="Install", ts=at(31)),
            event(run_id, "build_failed", ts=at(32), message="exit code 1"),
        ]
    )

    response = staff_client.get(f"{RUNS_URL}{run_id}/")

    assert response.status_code == 200
    detail = response.json()
    assert detail["status"] == "failed"
    assert [row["event"] for row in detail["events"]] == [
        "build_started",
        "stage_started",
        "stage_completed",
        "build_failed",
    ]
    assert detail["events"][1]["eventId"] == "a"
    assert detail["stages"] == [
        {
            "stage": "Install",
            "startedAt": "2026-03-02T09:00:01Z",
            "completedAt": "2026-03-02T09:00:31Z",
            "durationMs": 30000,
            "status": "done",
        }
    ]


def test_an_unknown_run_is_404(staff_client):
    assert staff_client.get(f"{RUNS_URL}{uuid.uuid4()}/").status_code == 404
    assert staff_client.get(f"{RUNS_URL}nope/").status_code == 404


# --- trends -----------------------------------------------------------------------------
def test_trends_give_p50_and_p95_per_command_over_last_runs_and_per_day(pro_account, staff_client):
    now = timezone.now().replace(hour=12)
    yesterday = now - dt.timedelta(days=1)
    for seconds in (10, 20, 30, 40, 50):
        finished_run(pro_account, "make release", yesterday, seconds * 1000, [("Test", seconds)])
    for seconds in (100, 200):
        finished_run(pro_account, "make release", now, seconds * 1000, [("Test", seconds)])
    finished_run(pro_account, "npm run build", now, 5000)
    finished_run(pro_account, "old", now - dt.timedelta(days=40), 5000)
    BuildRun.objects.create(
        run_id=uuid.uuid4(), account=pro_account, command="make release", started_at=now
    )  # still running: not in the figures

    body = staff_client.get(f"{RUNS_URL}trends/", {"lastRuns": 5, "days": 14}).json()

    by_command = {entry["command"]: entry for entry in body["commands"]}
    assert set(by_command) == {"make release", "npm run build"}
    release = by_command["make release"]
    # The last 5 runs: 100, 200 (today) and the three newest of yesterday's — all started at
    # the same moment, so any three of them; the whole build p50 is then one of 30..50 s.
    assert release["lastRuns"]["runs"] == 5
    assert release["lastRuns"]["build"]["count"] == 5
    assert release["lastRuns"]["stages"]["Test"]["count"] == 5
    assert release["daily"] == [
        {"date": yesterday.date().isoformat(), "count": 5, "p50": 30000, "p95": 48000},
        {"date": now.date().isoformat(), "count": 2, "p50": 150000, "p95": 195000},
    ]
    assert by_command["npm run build"]["lastRuns"]["build"] == {
        "count": 1,
        "p50": 5000,
        "p95": 5000,
    }


def test_trends_filter_by_command_and_validate_numbers(pro_account, staff_client):
    finished_run(pro_account, "a", timezone.now(), 1000)
    finished_run(pro_account, "b", timezone.now(), 1000)

    body = staff_client.get(f"{RUNS_URL}trends/", {"command": "b"}).json()
    assert [entry["command"] for entry in body["commands"]] == ["b"]
    bad = staff_client.get(f"{RUNS_URL}trends/", {"lastRuns": "0"})
    assert bad.status_code == 400
    assert "lastRuns" in bad.json()["error"]["fields"]


def test_percentile_interpolates_between_ranks():
    assert reports.percentile([], 0.5) is None
    assert reports.percentile([7], 0.95) == 7
    assert reports.percentile([10, 20, 30, 40], 0.5) == 25
    assert reports.percentile(list(range(1, 101)), 0.95) == 95


@pytest.mark.parametrize("url", [STATUS_URL, "/api/v1/build-status/"])
def test_without_a_parameter_the_status_uses_the_90_second_default(
    url, events_client, staff_client, api_client_for, run_id, monkeypatch
):
    """The staff status and the account's own (events:read) both default to 90 s."""
    client = (
        staff_client
        if url == STATUS_URL
        else api_client_for(events_client.account, scopes=[TokenScope.EVENTS_READ])
    )
    events_client.send(started(run_id))
    frozen = timezone.now()
    monkeypatch.setattr(reports, "timezone", types.SimpleNamespace(now=lambda: frozen))

    silent_for(run_id, 90, frozen)
    alive = client.get(url).json()
    silent_for(run_id, 91, frozen)
    silent = client.get(url).json()

    assert alive["heartbeatTimeout"] == 90
    assert (alive["running"], alive["activeRun"]["status"]) == (True, "running")
    assert (silent["running"], silent["activeRun"]["status"]) == (False, "stale")
    assert silent["activeRun"]["silentFor"] == 91
