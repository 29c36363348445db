"""What the Prometheus metrics cost on the hot paths, in this process, in the same rounds.

- Update check: a warm check of BuildHub's protocol through the whole ASGI application
  (answered in front of Django), alternately with the update-check counter and with it
  replaced by nothing; and the counting line's own CPU beside the check's.
- Engine: a no-op job submitted, claimed, run and finished in this process (this process's
  CPU only: the database's work is not counted, so the share is an upper bound), and the
  metric calls one job makes (submitted, claimed with its queue wait, finished with its run
  time, the claim that then finds nothing).
- Web: what the request middleware's counter and histogram cost per Django request.

Goal: under 3 % on the update check and the engine.
"""

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from django.test import override_settings

from buildhub import metrics
from buildhub.asgi import django_asgi_app
from builds import metrics as engine_metrics
from builds.choices import JobStatus
from builds.engine.runner import run_next_job
from builds.engine.submit import submit_job
from builds.models import Job
from builds.services import create_account
from publishing import asgi, checkins, edge, releases
from publishing.models import App
from tests.bench.helpers import row
from tests.support.publishing import finished_ota_build

SHARE_TARGET = 3.0  # percent


class _Counted:
    """Django's ASGI application, counting the requests that reach it."""

    def __init__(self):
        self.requests = 0

    async def __call__(self, scope, receive, send):
        self.requests += 1
        await django_asgi_app(scope, receive, send)


class _Nothing:
    def add(self, labels):
        pass


def _cpu_per_call(call, count: int) -> float:
    """Microseconds of this process's CPU per ``call()``, over ``count`` calls."""
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count * 1e6


def _published_app() -> App:
    account = create_account("Bench Metrics Co", tier="pro")
    app = App.objects.create(
        account=account,
        slug="bench-metrics",
        name="Bench Metrics",
        platforms=["android"],
        runtime_version="1.0.0",
    )
    build, _, _ = finished_ota_build(app, tmp_path=Path(tempfile.mkdtemp()))
    version = releases.create_version(app, [build.pk])
    publish, _ = releases.request_publish(version, "production", staff=True)
    for _ in range(10):  # jobs left by other benchmarks may come first
        run_next_job()
        if Job.objects.get(pk=publish.pk).status == JobStatus.SUCCEEDED:
            return app
    raise RuntimeError("the publish job did not succeed")


def update_check_rows(ctx, app: App) -> list[dict]:
    django = _Counted()
    front = asgi.UpdateCheckEdge(django)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/updates/check",
        "raw_path": b"/api/v1/updates/check",
        "root_path": "",
        "query_string": (
            f"app={app.slug}&platform=android&runtime_version=1.0.0&device=bench-device"
        ).encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"x-app-key", app.app_key.encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    statuses = []

    received = []

    async def receive():  # the request once (only Django reads it), then no disconnect
        if received:
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def checks(count: int):
        for _ in range(count):
            await front(scope, receive, send)

    loop = asyncio.new_event_loop()

    def cpu_per_check(count: int) -> float:
        started = time.process_time()
        loop.run_until_complete(checks(count))
        checkins.discard()
        return (time.process_time() - started) / count * 1e6

    calls = 2000 if ctx.quick else 20000
    counted = asgi._CHECKS
    uncounted = _Nothing()
    with_metrics, without, counting = [], [], []
    budgets = {"DEVICE_RATE_PER_APP": "1000000000/m", "DEVICE_RATE_PER_IP": "1000000000/m"}
    try:
        with override_settings(UPDATE_CHECK_EDGE_SECONDS=3600, CHECKIN_FLUSH_SECONDS=0, **budgets):
            loop.run_until_complete(checks(2))  # Django answers the first; the edge learns
            if django.requests != 1 or statuses[-1] != 200:
                raise RuntimeError(f"the edge did not answer: {django.requests}, {statuses}")
            for _ in range(1 if ctx.quick else 5):
                with_metrics.append(cpu_per_check(calls))
                asgi._CHECKS = uncounted
                try:
                    without.append(cpu_per_check(calls))
                finally:
                    asgi._CHECKS = counted
                body = b'{"sha256":"..."}'
                counting.append(
                    _cpu_per_call(
                        lambda b=body: counted.add(
                            ("update", asgi._check_answer("update", 200, b), "edge")
                        ),
                        calls,
                    )
                )
            if django.requests != 1:
                raise RuntimeError("checks reached Django during the measurement")
    finally:
        loop.close()
        edge.forget(app.app_key)
    ctx.log(f"update check: with {with_metrics}, without {without}, counter {counting} µs")
    check, bare, count = (statistics.median(v) for v in (with_metrics, without, counting))
    share = count / check * 100
    return [
        row("update check at the edge, whole ASGI call, with metrics (CPU)", check, "µs"),
        row("  the same without the update-check counter (CPU)", bare, "µs"),
        row("  the counting line alone (CPU)", count, "µs"),
        row(
            "  metrics' share of an edge-answered check",
            share,
            "%",
            f"< {SHARE_TARGET:g} %",
            share < SHARE_TARGET,
        ),
    ]


def engine_rows(ctx, app: App) -> list[dict]:
    jobs = 30 if ctx.quick else 200
    cpu = []
    for _ in range(1 if ctx.quick else 3):
        started = time.process_time()
        for _ in range(jobs):
            submit_job(app.account, "diagnostic.noop", {}, staff=True)
            run_next_job()
        cpu.append((time.process_time() - started) / jobs * 1e6)
    job = Job.objects.filter(kind="diagnostic.noop", status=JobStatus.SUCCEEDED).first()

    def one_jobs_metrics():
        engine_metrics.job_submitted(job)
        engine_metrics.job_claimed(job)
        engine_metrics.job_changed(job, "succeeded")
        engine_metrics.claim_found_nothing("nothing_eligible")

    calls = 2000 if ctx.quick else 20000
    counting = statistics.median(
        _cpu_per_call(one_jobs_metrics, calls) for _ in range(1 if ctx.quick else 3)
    )
    per_job = statistics.median(cpu)
    ctx.log(f"engine: per job {cpu} µs, metrics {counting} µs")
    share = counting / per_job * 100
    return [
        row("no-op job through the engine, this process's CPU", per_job, "µs"),
        row("  one job's metric calls (CPU)", counting, "µs"),
        row(
            "  metrics' share of a job's CPU",
            share,
            "%",
            f"< {SHARE_TARGET:g} %",
            share < SHARE_TARGET,
        ),
    ]


def web_rows(ctx) -> list[dict]:
    def request_metrics():
        metrics.HTTP_DURATION.labels("api/v1/jobs/", "GET").observe(0.004)
        metrics.HTTP_REQUESTS.labels("api/v1/jobs/", "GET", "200").inc()

    calls = 2000 if ctx.quick else 20000
    return [
        row(
            "request middleware's metrics per Django request (CPU)",
            _cpu_per_call(request_metrics, calls),
            "µs",
        )
    ]


def run(ctx) -> list[dict]:
    app = _published_app()
    return [*update_check_rows(ctx, app), *engine_rows(ctx, app), *web_rows(ctx)]
