import datetime as dt
import io
import uuid

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from buildevents.models import BuildRun, Notification
from builds import registry
from builds.management.commands.runworkers import Supervisor
from tests.support.build_events import at, event, finished_run, started

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_for_staff(staff):
    client = Client()
    client.force_login(staff)
    return client


def test_run_list_shows_status_badges(events_client, admin_client_for_staff, run_id):
    failed = uuid.uuid4()
    events_client.send(
        [started(run_id), started(failed, command="make release"), event(failed, "build_failed")]
    )

    page = admin_client_for_staff.get("/admin/buildevents/buildrun/").content.decode()

    assert f'data-testid="badge-run-status-{run_id}"' in page
    assert 'class="bh-badge bh-badge-running"' in page
    assert 'class="bh-badge bh-badge-failed"' in page
    assert "Duration trends" in page


def test_run_list_does_not_query_per_row(
    events_client, admin_client_for_staff, django_assert_max_num_queries
):
    events_client.send([started(uuid.uuid4()) for _ in range(10)])

    with django_assert_max_num_queries(16):
        assert admin_client_for_staff.get("/admin/buildevents/buildrun/").status_code == 200


def test_run_page_shows_the_timeline_read_only(events_client, admin_client_for_staff, run_id):
    events_client.send(
        [
            started(run_id, ts=at(0)),
            event(run_id, "stage_started", stage="Backend Clean", ts=at(1)),
            event(run_id, "stage_completed", stage="Backend Clean", durationMs=151000, ts=at(152)),
        ]
    )
    run = BuildRun.objects.get(run_id=run_id)

    page = admin_client_for_staff.get(f"/admin/buildevents/buildrun/{run.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Timeline" in html
    assert "Backend Clean" in html
    assert "2m31s" in html
    assert 'name="_save"' not in html  # read-only: nothing to save
    assert admin_client_for_staff.get("/admin/buildevents/buildrun/add/").status_code == 403


def test_trends_page_draws_an_svg_chart(pro_account, admin_client_for_staff):
    now = timezone.now()
    for days, seconds in ((2, 60), (1, 90), (0, 120)):
        finished_run(pro_account, "make release", now - dt.timedelta(days=days), seconds * 1000)

    page = admin_client_for_staff.get("/admin/buildevents/buildrun/trends/").content.decode()

    assert "make release" in page
    assert "<svg" in page and "<polyline" in page
    assert page.count("<circle") == 6  # a p50 and a p95 point per day
    assert "cdn" not in page.lower()


def test_banner_shows_the_running_build_on_every_admin_page(
    events_client, admin_client_for_staff, run_id
):
    begin = timezone.now() - dt.timedelta(seconds=125)
    events_client.send(
        [
            started(run_id, ts=begin.isoformat()),
            event(run_id, "stage_started", stage="Bundle", ts=begin.isoformat()),
        ]
    )

    for url in ("/admin/", "/admin/builds/account/", "/admin/buildevents/buildrun/"):
        html = admin_client_for_staff.get(url).content.decode()
        assert 'data-testid="build-status-banner"' in html
        assert "Building: stage Bundle, 2m" in html  # 2m05s and on
        assert "/static/buildevents/banner.js" in html
        assert 'id="bh-build-status"' in html  # the initial status for the script


def test_banner_says_stale_when_the_heartbeat_is_old(events_client, admin_client_for_staff, run_id):
    events_client.send(started(run_id))
    BuildRun.objects.filter(run_id=run_id).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(minutes=3, seconds=5)
    )

    html = admin_client_for_staff.get("/admin/").content.decode()

    assert "stale: no heartbeat for 3m" in html


def test_banner_is_hidden_with_nothing_running(admin_client_for_staff):
    html = admin_client_for_staff.get("/admin/").content.decode()

    assert 'data-testid="build-status-banner"' in html
    assert "hidden>" in html.split('data-testid="build-status-banner"')[1].split("</div>")[0]


def test_unread_count_is_in_the_admin_header(events_client, admin_client_for_staff, run_id):
    events_client.send([started(run_id), event(run_id, "build_completed")])

    html = admin_client_for_staff.get("/admin/").content.decode()

    assert 'data-testid="unread-notifications"' in html
    assert '<span class="bh-unread">2</span>' in html


def test_mark_read_action(events_client, admin_client_for_staff, staff, run_id):
    events_client.send([started(run_id), event(run_id, "build_completed")])
    ids = list(Notification.objects.filter(user=staff).values_list("pk", flat=True))

    admin_client_for_staff.post(
        "/admin/buildevents/notification/",
        {"action": "mark_read", "_selected_action": ids},
    )

    assert Notification.objects.filter(user=staff, read_at__isnull=True).count() == 0


# --- commands and the supervisor --------------------------------------------------------
def test_sweep_stale_runs_command(events_client, run_id):
    events_client.send(started(run_id))
    BuildRun.objects.filter(run_id=run_id).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(seconds=200)
    )
    out = io.StringIO()

    call_command("sweep_stale_runs", "--timeout", "120", stdout=out)

    assert f"stale: {run_id}" in out.getvalue()
    assert "Marked 1 run(s) stale (no heartbeat for over 120s)." in out.getvalue()
    assert BuildRun.objects.get(run_id=run_id).status == "stale"


def test_the_supervisor_runs_the_stale_sweep(events_client, run_id, settings):
    settings.BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS = 90
    events_client.send(started(run_id))
    BuildRun.objects.filter(run_id=run_id).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(seconds=200)
    )
    assert "buildevents.stale-runs" in [task.name for task in registry.periodic_tasks()]

    Supervisor(clusters=0, idle_seconds=1, out=lambda line: None).sweep()

    assert BuildRun.objects.get(run_id=run_id).status == "stale"


def test_webhook_endpoints_are_validated(admin_client_for_staff):
    from django.core.exceptions import ValidationError

    from buildevents.models import WebhookEndpoint

    with pytest.raises(ValidationError) as refused:
        WebhookEndpoint(url="ftp://example.com/hook", kinds=["build_failed", "lunch"]).full_clean()

    assert set(refused.value.message_dict) == {"url", "kinds"}
    WebhookEndpoint(url="https://example.com/hook", kinds=["stale"]).full_clean()
