"""Customers' own build runs, status and trends (`events:read`): one account never sees
another's runs, whatever it asks for."""

import uuid

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from builds.choices import TokenScope
from builds.models import ApiToken
from tests.support.accounts import make_account
from tests.support.build_events import EventsClient, at, event, finished_run, started

pytestmark = pytest.mark.django_db

RUNS_URL = "/api/v1/build-runs/"
STATUS_URL = "/api/v1/build-status/"


@pytest.fixture
def rival(db):
    return make_account("enterprise", "Rival Builds")


@pytest.fixture
def reader_for(api_client_for):
    def build(account):
        return api_client_for(account, scopes=[TokenScope.EVENTS_READ])

    return build


def post_events(account, token_for, body):
    client = EventsClient()
    client.credentials(HTTP_X_BUILD_TOKEN=token_for(account))
    response = client.send(body)
    assert response.status_code == 200, response.content
    return response


def test_runs_list_shows_only_the_accounts_own_runs(pro_account, rival, token_for, reader_for):
    own, theirs = uuid.uuid4(), uuid.uuid4()
    post_events(pro_account, token_for, started(own, command="make mine", branch="main"))
    post_events(rival, token_for, started(theirs, command="make theirs", branch="main"))

    response = reader_for(pro_account).get(RUNS_URL)

    assert response.status_code == 200
    body = response.json()
    assert [row["runId"] for row in body["results"]] == [str(own)]
    assert body["results"][0]["account"] == pro_account.slug
    assert "make theirs" not in response.content.decode()
    # Filters narrow within the account, never beyond it.
    filtered = reader_for(pro_account).get(RUNS_URL, {"branch": "main", "status": "running"})
    assert [row["runId"] for row in filtered.json()["results"]] == [str(own)]


def test_a_run_of_another_account_is_404_and_its_own_has_the_timeline(
    pro_account, rival, token_for, reader_for
):
    own, theirs = uuid.uuid4(), uuid.uuid4()
    post_events(
        pro_account,
        token_for,
        [
            started(own, ts=at(0)),
            event(own, "stage_started", stage="Bundle", ts=at(1)),
            event(own, "stage_completed", stage="Bundle", ts=at(11)),
            event(own, "build_completed", ts=at(12)),
        ],
    )
    post_events(rival, token_for, started(theirs, command="secret deploy"))

    refused = reader_for(pro_account).get(f"{RUNS_URL}{theirs}/")
    owned = reader_for(pro_account).get(f"{RUNS_URL}{own}/")

    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert "secret deploy" not in refused.content.decode()
    assert owned.status_code == 200
    detail = owned.json()
    assert detail["status"] == "success"
    assert [row["event"] for row in detail["events"]] == [
        "build_started",
        "stage_started",
        "stage_completed",
        "build_completed",
    ]
    assert [(s["stage"], s["durationMs"], s["status"]) for s in detail["stages"]] == [
        ("Bundle", 10000, "done")
    ]


def test_status_shows_the_accounts_own_build_never_anothers(
    pro_account, rival, token_for, reader_for
):
    theirs = uuid.uuid4()
    post_events(rival, token_for, started(theirs, command="rival deploy"))

    idle = reader_for(pro_account).get(STATUS_URL)

    assert idle.status_code == 200
    assert idle.json()["running"] is False
    assert idle.json()["activeRun"] is None
    # The rival sees its own build running.
    assert reader_for(rival).get(STATUS_URL).json()["activeRun"]["runId"] == str(theirs)

    own = uuid.uuid4()
    post_events(pro_account, token_for, started(own, command="make mine"))
    body = reader_for(pro_account).get(STATUS_URL).json()
    assert body["running"] is True
    assert body["activeRun"]["runId"] == str(own)
    assert body["activeRun"]["command"] == "make mine"


def test_trends_count_only_the_accounts_own_runs(pro_account, rival, reader_for):
    now = timezone.now()
    finished_run(pro_account, "make release", now, 10_000, [("Test", 4000)])
    finished_run(rival, "make release", now, 90_000, [("Test", 80_000)])
    finished_run(rival, "rival only", now, 1000)

    body = reader_for(pro_account).get(f"{RUNS_URL}trends/").json()

    assert [entry["command"] for entry in body["commands"]] == ["make release"]
    release = body["commands"][0]["lastRuns"]
    assert release["build"] == {"count": 1, "p50": 10_000, "p95": 10_000}
    assert release["stages"]["Test"]["count"] == 1


def test_staff_see_every_accounts_runs(pro_account, rival, token_for, staff):
    post_events(pro_account, token_for, started(uuid.uuid4()))
    post_events(rival, token_for, started(uuid.uuid4()))
    client = APIClient()
    client.force_login(staff)

    assert client.get(RUNS_URL).json()["count"] == 2


def test_events_read_is_needed_and_opens_nothing_else(pro_account, api_client_for, reader_for):
    builds_reader = api_client_for(pro_account, scopes=[TokenScope.BUILDS_READ])
    events_writer = api_client_for(pro_account, scopes=[TokenScope.EVENTS_WRITE])
    events_reader = reader_for(pro_account)

    for url in (RUNS_URL, f"{RUNS_URL}trends/", STATUS_URL, f"{RUNS_URL}{uuid.uuid4()}/"):
        for client in (builds_reader, events_writer):
            response = client.get(url)
            assert response.status_code == 403, url
            assert "events:read" in response.json()["error"]["message"]
        assert APIClient().get(url).status_code == 401
    # The staff endpoints stay staff-only, and the token reads no builds.
    assert events_reader.get("/api/v1/admin/build-runs/").status_code == 403
    assert events_reader.get("/api/v1/admin/build-status/").status_code == 403
    assert events_reader.get("/api/v1/builds/").status_code == 403


def test_runs_list_has_a_fixed_number_of_queries(
    pro_account, token_for, reader_for, django_assert_max_num_queries
):
    for _ in range(5):
        post_events(pro_account, token_for, started(uuid.uuid4()))
    client = reader_for(pro_account)

    with django_assert_max_num_queries(6):
        assert client.get(RUNS_URL).json()["count"] == 5


# --- scopes -------------------------------------------------------------------------------
def test_tokens_are_created_with_events_read_and_not_updates_read(pro_account, capsys):
    call_command("createtoken", pro_account.slug, "--scopes", "events:read", "--name", "dash")
    printed = capsys.readouterr()
    assert "(events:read;" in printed.err
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {printed.out.strip()}")
    assert client.get(RUNS_URL).status_code == 200

    with pytest.raises(CommandError, match="updates:read"):
        call_command("createtoken", pro_account.slug, "--scopes", "updates:read")


def test_the_migration_drops_updates_read_from_existing_tokens(pro_account, api_client_for):
    from importlib import import_module

    migration = import_module("builds.migrations.0009_drop_updates_read_scope")
    kept = api_client_for(pro_account, scopes=[TokenScope.BUILDS_READ]).token
    old = api_client_for(pro_account, scopes=[TokenScope.BUILDS_READ]).token
    ApiToken.objects.filter(pk=old.pk).update(scopes=["builds:read", "updates:read"])

    migration.drop_updates_read(apps, None)

    old.refresh_from_db()
    kept.refresh_from_db()
    assert old.scopes == ["builds:read"]
    assert kept.scopes == ["builds:read"]
    old.full_clean()  # a token edited in the admin afterwards validates
