"""/metrics as Prometheus (and an operator with curl) sees it: what is counted, who may read it."""

import datetime as dt
import os
import shutil
import subprocess
import uuid

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from buildhub import metrics
from builds.engine.claim import claim_next_job
from builds.engine.runner import run_next_job
from builds.engine.workers import reap_expired_leases
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account


def scrape(client=None, **headers) -> str:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def samples(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.django_db
def test_queue_depth_oldest_wait_and_workers_are_read_at_scrape_time():
    enterprise = make_account("enterprise", "Metrics Co")
    free = make_account("free", "Metrics Free Co")
    queue_jobs(enterprise, 2)
    queue_jobs(free, 1)
    Job.objects.filter(account=free).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    worker("metrics-worker")

    scraped = samples(scrape())

    assert value(scraped, "buildhub_queue_jobs", **{"class": "P0"}) == 2
    assert value(scraped, "buildhub_queue_jobs", **{"class": "P3"}) == 1
    assert value(scraped, "buildhub_queue_jobs", **{"class": "P1"}) == 0
    assert value(scraped, "buildhub_queue_oldest_wait_seconds", **{"class": "P3"}) >= 300
    assert value(scraped, "buildhub_queue_oldest_wait_seconds", **{"class": "P1"}) == 0
    assert value(scraped, "buildhub_workers", state="starting") == 1
    assert value(scraped, "buildhub_jobs_running", **{"class": "P0"}) == 0
    assert value(scraped, "buildhub_supervisor_state", state="running") == 1
    assert value(scraped, "buildhub_supervisor_state", state="scaled_to_zero") == 0
    assert value(scraped, "buildhub_heat_up_floor_workers") == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_that_runs_is_counted_submitted_claimed_finished_and_timed():
    account = make_account("pro", "Counted Co")
    before = samples(scrape())
    queue_jobs(account, 1, kind="diagnostic.noop", params={})
    run_next_job()
    run_next_job()  # finds nothing
    after = samples(scrape())

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    job = {"kind": "diagnostic.noop", "tier": "pro"}
    assert grew("buildhub_jobs_submitted_total", **job) >= 1
    assert grew("buildhub_jobs_claimed_total", **job) >= 1
    assert grew("buildhub_jobs_finished_total", **job, outcome="succeeded") >= 1
    assert grew("buildhub_job_queue_wait_seconds_count", **job) >= 1
    run = {"kind": "diagnostic.noop", "outcome": "succeeded"}
    assert grew("buildhub_job_run_seconds_count", **run) >= 1
    assert grew("buildhub_job_claims_empty_total", reason="nothing_eligible") >= 1


@pytest.mark.django_db(transaction=True)
def test_lease_reaps_and_retries_are_counted():
    account = make_account("enterprise", "Reaped Co")
    worker("ghost")
    job = queue_jobs(account, 1, max_attempts=2)[0]
    before = samples(scrape())
    past = timezone.now() - dt.timedelta(seconds=1)
    claim_next_job("ghost")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_leases() == 1
    Job.objects.filter(pk=job.pk).update(not_before=None)
    claim_next_job("ghost")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_leases() == 1
    after = samples(scrape())

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("buildhub_job_lease_reaps_total", outcome="retrying") >= 1
    assert grew("buildhub_job_lease_reaps_total", outcome="failed") >= 1
    retry = {"kind": "diagnostic.sleep", "cause": "worker_lost"}
    assert grew("buildhub_job_retries_total", **retry) >= 1
    failed = {"kind": "diagnostic.sleep", "tier": "enterprise", "outcome": "failed"}
    assert grew("buildhub_jobs_finished_total", **failed) >= 1


@pytest.mark.django_db
def test_requests_are_labelled_by_route_template_never_by_path():
    client = Client()
    job_id = uuid.uuid4()
    client.get(f"/api/v1/jobs/{job_id}/")
    client.get(f"/no/such/page/{job_id}")
    scraped = scrape(client)

    assert str(job_id) not in scraped
    parsed = samples(scraped)
    routes = {
        dict(labels)["route"] for (name, labels) in parsed if name == "buildhub_http_requests_total"
    }
    assert "job-detail" in routes  # a router's regular expression: the view's name
    assert "unmatched" in routes
    unauthenticated = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(parsed, "buildhub_http_requests_total", **unauthenticated) >= 1
    assert any(name == "buildhub_http_request_duration_seconds_bucket" for name, _ in parsed)


@pytest.mark.integration  # promtool (make observability)
@pytest.mark.django_db
def test_the_scrape_passes_promtool_check_metrics():
    account = make_account("starter", "Linted Co")
    queue_jobs(account, 1)
    Client().get("/healthz")
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make observability` installs it (Debian: prometheus)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_without_an_allowed_address_a_token_is_required(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.9.9.0/24"]
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    client = Client()

    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert "METRICS_TOKEN" in missing.json()["error"]["message"]

    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "The metrics token is not valid."

    assert "buildhub_queue_jobs" in scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert "buildhub_queue_jobs" in scrape(client, REMOTE_ADDR="10.9.9.7")


@pytest.mark.django_db
def test_without_a_token_only_allowed_addresses_may_scrape(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1"]
    settings.METRICS_TOKEN = ""

    refused = Client().get("/metrics", REMOTE_ADDR="192.0.2.10")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "METRICS_ALLOWED_NETWORKS" in refused.json()["error"]["message"]
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 200


def test_dead_processes_are_swept_and_live_ones_left(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    live = os.getpid()
    for pid in (gone.pid, live):
        for name in (f"counter_{pid}.db", f"gauge_livesum_{pid}.db"):
            (tmp_path / name).write_bytes(b"")

    assert metrics.sweep_dead_processes() == 1
    assert not (tmp_path / f"gauge_livesum_{gone.pid}.db").exists()
    assert (tmp_path / f"counter_{gone.pid}.db").exists()  # totals keep their share

    assert metrics.sweep_dead_processes(wipe=True) == 1
    assert not (tmp_path / f"counter_{gone.pid}.db").exists()
    assert (tmp_path / f"counter_{live}.db").exists()
    assert (tmp_path / f"gauge_livesum_{live}.db").exists()


async def test_open_websockets_are_counted_until_they_close():
    import asyncio

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    def websockets_open() -> float:  # every process's samples, as a scrape adds them up
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry).decode()
        return value(samples(text), "buildhub_websocket_connections")

    closing = asyncio.Event()

    async def consumer(scope, receive, send):
        await closing.wait()

    connection = asyncio.create_task(
        metrics.WebsocketGauge(consumer)({"type": "websocket"}, None, None)
    )
    await asyncio.sleep(0)
    while_open = websockets_open()
    closing.set()
    await connection

    assert while_open - websockets_open() == 1


@pytest.mark.django_db
def test_rate_limit_refusals_are_counted_by_limit(settings, api_client_for):
    from publishing import device_limits

    settings.DEVICE_RATE_PER_IP = "1/100d"
    settings.API_RATE_LIMIT = "1/m"
    device_limits.reset()
    before = samples(scrape())
    try:
        device = Client(REMOTE_ADDR="198.51.100.99", HTTP_X_APP_KEY="no-such-app")
        device.get("/api/v1/updates/check?app=shop&platform=android&runtime_version=1")
        refused_device = device.get("/api/v1/updates/check?app=shop&platform=android")
        client = api_client_for(make_account("free", "Limited Co"))
        client.get("/api/v1/jobs/")
        refused_api = client.get("/api/v1/jobs/")
    finally:
        device_limits.reset()
    after = samples(scrape())

    assert refused_device.status_code == 429
    assert refused_api.status_code == 429
    for limit in ("device", "api"):
        grew = value(after, "buildhub_rate_limit_refusals_total", limit=limit) - value(
            before, "buildhub_rate_limit_refusals_total", limit=limit
        )
        assert grew >= 1, limit
