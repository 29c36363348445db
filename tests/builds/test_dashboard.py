import datetime as dt
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from buildhub.asgi import application
from builds import dashboard
from builds.choices import JobStatus, Tier
from builds.engine.claim import claim_next_job
from builds.engine.workers import register_worker
from builds.models import HeatUp, Job, Worker
from builds.tiers import TIERS
from tests.builds.engine_helpers import queue_jobs, worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def age(job, **delta):
    """Move a job's creation back in time, as if it had waited that long."""
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(**delta))


def test_percentile_is_nearest_rank():
    assert dashboard.percentile([], 0.5) is None
    assert dashboard.percentile([5], 0.95) == 5
    values = list(range(1, 101))
    assert dashboard.percentile(values, 0.5) == 50
    assert dashboard.percentile(values, 0.95) == 95


def test_queue_depth_oldest_wait_and_waits_of_the_last_hour(
    free_account, enterprise_account, pro_account
):
    free_jobs = queue_jobs(free_account, 3)
    age(free_jobs[0], minutes=5)
    queue_jobs(enterprise_account, 1)
    worker("w1", processes=4)
    started = claim_next_job("w1")  # the enterprise job: P0 goes first
    Job.objects.filter(pk=started.pk).update(
        created_at=started.started_at - dt.timedelta(seconds=40)
    )

    data = dashboard.snapshot()
    queues = {row["class"]: row for row in data["queues"]}
    assert queues["P3"]["depth"] == 3
    assert 295 <= queues["P3"]["oldest_wait_seconds"] <= 310
    assert queues["P0"]["depth"] == 0
    assert queues["P0"]["oldest_wait_seconds"] is None
    assert queues["P0"]["wait_p50_seconds"] == pytest.approx(40, abs=1)
    assert queues["P1"]["depth"] == 0
    assert data["queued"] == 3 and data["running"] == 1
    assert data["accounts"] == [
        {
            "account": enterprise_account.slug,
            "name": enterprise_account.name,
            "tier": "Enterprise",
            "running": 1,
            "limit": TIERS[Tier.ENTERPRISE].max_concurrent,
        }
    ]


def test_worker_health_follows_the_lease(settings, free_account):
    settings.JOB_LEASE_SECONDS = 30
    worker("fresh")
    stale = worker("stale")
    Worker.objects.filter(pk=stale.pk).update(last_seen=timezone.now() - dt.timedelta(seconds=45))
    rows = {row["id"]: row for row in dashboard.snapshot()["workers"]}
    assert rows["fresh"]["healthy"] is True
    assert rows["stale"]["healthy"] is False
    assert rows["stale"]["last_seen_seconds"] >= 45


def test_supervisor_state_from_the_database(free_account):
    assert dashboard.snapshot()["supervisor"]["state"] == "scaled_to_zero"
    queue_jobs(free_account, 1)
    supervisor = dashboard.snapshot()["supervisor"]
    assert supervisor["state"] == "starting"
    assert supervisor["text"] == "Worker starting..."
    worker("w1")
    assert dashboard.snapshot()["supervisor"]["state"] == "running"
    HeatUp.objects.create(workers=3, until=timezone.now() + dt.timedelta(hours=2))
    supervisor = dashboard.snapshot()["supervisor"]
    assert supervisor["state"] == "warm"
    assert supervisor["heat_floor"] == 3
    assert supervisor["text"].startswith("warm: 3 worker(s) until")


def test_charts_count_finished_jobs_per_hour(free_account):
    jobs = queue_jobs(free_account, 3)
    # Mid-hour, so the jobs and the snapshot fall in the same hourly bucket whatever the clock.
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    Job.objects.filter(pk__in=[job.pk for job in jobs[:2]]).update(
        status=JobStatus.SUCCEEDED,
        started_at=now - dt.timedelta(seconds=30),
        finished_at=now,
    )
    Job.objects.filter(pk=jobs[2].pk).update(
        status=JobStatus.FAILED, started_at=now - dt.timedelta(seconds=5), finished_at=now
    )
    charts = dashboard.snapshot(now + dt.timedelta(minutes=1))["charts"]
    assert len(charts["hours"]) == 24
    assert charts["finished"]["succeeded"][-1] == 2
    assert charts["finished"]["failed"][-1] == 1
    assert sum(charts["finished"]["succeeded"]) == 2
    assert charts["duration_p50_seconds"][-1] == pytest.approx(30, abs=1)


def test_admin_index_shows_the_dashboard(admin_client, free_account, pro_account):
    queue_jobs(free_account, 2)
    queue_jobs(pro_account, 1)
    page = admin_client.get("/admin/").content.decode()
    assert 'data-testid="queue-depth-P3">2<' in page
    assert 'data-testid="queue-depth-P1">1<' in page
    assert 'data-testid="kpi-queued">3<' in page
    assert "Worker starting..." in page
    assert "vendor/chartjs/chart.umd.min.js" in page
    assert 'id="ops-dashboard-data"' in page


def test_the_workers_table_shows_how_each_worker_sandboxes_builds(admin_client):
    register_worker("node-a:1:1", "node-a", 1, 2, "bwrap")
    register_worker("node-b:2:1", "node-b", 2, 2, "broken: bubblewrap (bwrap) is not installed")

    page = admin_client.get("/admin/").content.decode()
    rows = {row["id"]: row for row in dashboard.snapshot()["workers"]}

    assert '<td data-testid="worker-sandbox">bwrap</td>' in page
    assert "broken: bubblewrap (bwrap) is not installed</td>" in page
    assert rows["node-a:1:1"]["sandbox"] == "bwrap"


def test_dashboard_needs_staff(client, django_user_model):
    user = django_user_model.objects.create_user("customer", password="pw-123456789")
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_heat_up_form_calls_the_service_and_is_logged(admin_client, staff):
    response = admin_client.post("/admin/builds/heatup/start/", {"workers": 3, "minutes": 120})
    assert response.status_code == 302
    heat_up = HeatUp.objects.get()
    assert heat_up.workers == 3
    assert heat_up.created_by == staff.username
    remaining = heat_up.until - timezone.now()
    assert dt.timedelta(minutes=119) < remaining <= dt.timedelta(minutes=120)
    entry = LogEntry.objects.get(object_id=str(heat_up.pk))
    assert "3 worker(s) for 120 min" in entry.get_change_message()
    page = admin_client.get("/admin/").content.decode()
    assert "Heating up: 3 worker(s)" in page
    assert 'data-testid="button-cooldown"' in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"workers": 0, "minutes": 60}, "Heat-up takes 1 to 50 workers."),
        ({"workers": 2, "minutes": 60 * 48}, "Heat-up lasts from 1 minute to 24 hours."),
        ({"workers": "many", "minutes": 60}, "Heat-up needs a number of workers and minutes."),
    ],
)
def test_heat_up_form_refuses_bad_values(admin_client, form, message):
    response = admin_client.post("/admin/builds/heatup/start/", form, follow=True)
    assert message in response.content.decode()
    assert not HeatUp.objects.exists()


def test_cool_down_ends_heat_ups(admin_client):
    admin_client.post("/admin/builds/heatup/start/", {"workers": 2, "minutes": 60})
    response = admin_client.post("/admin/builds/heatup/cool-down/", follow=True)
    assert "Cooled down: 1 heat-up(s) ended." in response.content.decode()
    assert HeatUp.objects.get().cancelled_at is not None
    assert dashboard.snapshot()["supervisor"]["heat_floor"] == 0


def test_heat_up_refuses_get(admin_client):
    assert admin_client.get("/admin/builds/heatup/start/").status_code == 403


async def connect(user=None):
    communicator = WebsocketCommunicator(
        application, "/ws/admin/dashboard/", headers=[(b"origin", b"http://localhost")]
    )
    if user is not None:
        communicator.scope["user"] = user
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_dashboard_socket_sends_numbers_and_changes(settings, staff, free_account):
    settings.DASHBOARD_REFRESH_SECONDS = 0.05
    communicator = await connect(staff)
    connected, _ = await communicator.connect()
    assert connected
    first = json.loads(await communicator.receive_from(timeout=5))
    assert first["queued"] == 0
    await database_sync_to_async(queue_jobs)(free_account, 2)
    second = json.loads(await communicator.receive_from(timeout=5))
    assert second["queued"] == 2
    assert {row["class"]: row["depth"] for row in second["queues"]}["P3"] == 2
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_dashboard_socket_refuses_anonymous_and_customers(django_user_model):
    communicator = await connect()
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4401)
    customer = await database_sync_to_async(django_user_model.objects.create_user)("customer")
    communicator = await connect(customer)
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4403)
