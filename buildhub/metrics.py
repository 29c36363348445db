"""Prometheus metrics: what every process counts, and the ``/metrics`` scrape.

Every process (each daphne, each worker process, the supervisor) writes its samples to
memory-mapped files of its own under ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings before
anything imports prometheus_client), and a scrape of any web process adds them up. Figures
that the database already knows (queue depth, oldest wait, workers) are read at scrape time
by collectors the apps register (``register_collector``), not counted here.

Labels take values from small fixed sets only (job kinds, tiers, route templates, statuses):
never a raw path, an id or an account.
"""

import hmac
import ipaddress
import logging
import os
import re
import time
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from buildhub.errors import error_body
from buildhub.net import client_ip

logger = logging.getLogger("buildhub.metrics")

# Seconds: from a cached API answer to a long build.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
STEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# --- the job engine ----------------------------------------------------------------------
JOBS_SUBMITTED = Counter(
    "buildhub_jobs_submitted_total", "Jobs queued by a submission.", ["kind", "tier"]
)
JOBS_CLAIMED = Counter(
    "buildhub_jobs_claimed_total", "Jobs a worker claimed (each attempt).", ["kind", "tier"]
)
JOBS_FINISHED = Counter(
    "buildhub_jobs_finished_total",
    "Jobs that reached an end state (succeeded, failed, timed_out, cancelled).",
    ["kind", "tier", "outcome"],
)
JOB_RETRIES = Counter(
    "buildhub_job_retries_total",
    "Failed attempts sent back to the queue with backoff (cause: failure, worker_lost).",
    ["kind", "cause"],
)
JOBS_RELEASED = Counter(
    "buildhub_jobs_released_total",
    "Running jobs a stopping worker handed back without spending an attempt.",
    ["kind"],
)
CLAIMS_EMPTY = Counter(
    "buildhub_job_claims_empty_total",
    "Claims that took no job (reason: nothing_eligible, draining).",
    ["reason"],
)
LEASE_REAPS = Counter(
    "buildhub_job_lease_reaps_total",
    "Jobs whose lease expired, reaped by the supervisor (outcome: retrying, failed).",
    ["outcome"],
)
LEASES_LOST = Counter(
    "buildhub_job_leases_lost_total", "Jobs whose worker found its lease lost and stopped."
)
JOB_QUEUE_WAIT = Histogram(
    "buildhub_job_queue_wait_seconds",
    "From submission to the first claim of a job.",
    ["kind", "tier"],
    buckets=JOB_BUCKETS,
)
JOB_RUN = Histogram(
    "buildhub_job_run_seconds",
    "From the last claim to the end of a job that ran.",
    ["kind", "outcome"],
    buckets=JOB_BUCKETS,
)

# --- web ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "buildhub_http_requests_total",
    "HTTP requests Django answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "buildhub_http_request_duration_seconds",
    "Time Django took to answer, by route template and method.",
    ["route", "method"],
    buckets=REQUEST_BUCKETS,
)
WEBSOCKETS_OPEN = Gauge(
    "buildhub_websocket_connections",
    "Websocket connections open now.",
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter(
    "buildhub_rate_limit_refusals_total",
    "Requests refused by a rate limit (limit: api (per token), account (the account's "
    "submit and read budgets), device, admin_login).",
    ["limit"],
)

# --- publishing and devices --------------------------------------------------------------
UPDATE_CHECKS = Counter(
    "buildhub_update_checks_total",
    "Device update checks by protocol (update, expo, codepush), answer (update, no_update, "
    "refused, error) and where they were answered (edge: in front of Django; django).",
    ["protocol", "answer", "served_by"],
)
PUBLISHES = Counter("buildhub_publishes_total", "Versions published.", ["env"])
ROLLBACKS = Counter("buildhub_rollbacks_total", "Releases rolled back.", ["env"])
OTA_STEP = Histogram(
    "buildhub_ota_step_duration_seconds",
    "Duration of each OTA build step (install, bundle, hermes, upload...).",
    ["step"],
    buckets=STEP_BUCKETS,
)

# --- build events and abuse --------------------------------------------------------------
BUILD_EVENTS = Counter(
    "buildhub_build_events_total", "Lifecycle events ingested from build scripts."
)
BUILD_RUNS_STALE = Counter(
    "buildhub_build_runs_stale_total", "Build runs marked stale (no event in time)."
)
ABUSE_SCORES = Counter("buildhub_abuse_scores_total", "Abuse scores computed.")
ABUSE_FLAGS = Counter("buildhub_abuse_flags_total", "Abuse flags opened for review.")
ABUSE_BLOCKS = Counter("buildhub_abuse_blocks_total", "Accounts blocked for abuse.")


class Tally:
    """Increments of a labelled counter kept in this process's memory and added to it at
    most once every ``interval`` seconds (and before each scrape this process answers): for
    the hottest paths, where a multiprocess counter's own increment (a lock and a write to
    its file, about a microsecond) costs too much. A scrape answered by another process may
    see them ``interval`` late; one that races a flush may miss an increment."""

    def __init__(self, counter: Counter, label_sets, interval: float = 1.0):
        self.children = {labels: counter.labels(*labels) for labels in label_sets}
        self.counts = dict.fromkeys(self.children, 0)
        self.interval = interval
        self.next_flush = 0.0
        _tallies.append(self)

    def add(self, labels: tuple) -> None:
        self.counts[labels] += 1
        now = time.monotonic()
        if now >= self.next_flush:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self.next_flush = (now or time.monotonic()) + self.interval
        for labels, count in self.counts.items():
            if count:
                self.counts[labels] -= count
                self.children[labels].inc(count)


_tallies: list[Tally] = []


# --- scrape ------------------------------------------------------------------------------
_collectors: list[Collector] = []


def register_collector(collector) -> None:
    """A collector (prometheus_client's ``collect()`` protocol) read at every scrape: gauges
    from the database. Apps register theirs in ``AppConfig.ready()``."""
    if collector not in _collectors:
        _collectors.append(collector)


def multiprocess_dir() -> Path:
    return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def exposition() -> bytes:
    """Every process's samples added up, and the collectors' gauges, in the text format."""
    for tally in _tallies:
        tally.flush()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(multiprocess_dir()))
    for collector in _collectors:
        registry.register(collector)
    return generate_latest(registry)


_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_processes(*, wipe: bool = False) -> int:
    """Forget processes that are gone. Without ``wipe``: their live gauges (websockets open)
    stop counting (``mark_process_dead``), their counters stay in the sums. With ``wipe`` (a
    supervisor starting): every file of a dead process is removed, so the directory does not
    grow with each restart; a counter then drops, which Prometheus reads as a reset. Files of
    live processes are never touched. Returns how many processes were swept."""
    directory = multiprocess_dir()
    dead = set()
    for path in directory.glob("*.db"):
        match = _PID.search(path.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
            if wipe:
                path.unlink(missing_ok=True)
    if not wipe:
        for pid in dead:
            multiprocess.mark_process_dead(pid, str(directory))
    return len(dead)


def _allowed_address(request) -> bool:
    address = client_ip(request)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in _allowed_networks())


_networks_cache: dict[tuple, list] = {}


def _allowed_networks() -> list:
    key = tuple(settings.METRICS_ALLOWED_NETWORKS)
    if key not in _networks_cache:
        _networks_cache[key] = [ipaddress.ip_network(entry, strict=False) for entry in key]
    return _networks_cache[key]


def _bearer(request) -> str:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def metrics_view(request):
    """The scrape: for METRICS_ALLOWED_NETWORKS, or with ``Authorization: Bearer
    <METRICS_TOKEN>``; 401 (a token is configured but missing or wrong) or 403 otherwise."""
    token = settings.METRICS_TOKEN
    given = _bearer(request)
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        allowed = True
    else:
        allowed = _allowed_address(request)
    if not allowed and token:
        message = "Metrics need Authorization: Bearer <METRICS_TOKEN>."
        if given:
            message = "The metrics token is not valid."
        response = JsonResponse(error_body("not_authenticated", message), status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not allowed:
        message = (
            "Metrics are served only to the addresses in METRICS_ALLOWED_NETWORKS "
            "(or with METRICS_TOKEN, which is not set)."
        )
        return JsonResponse(error_body("permission_denied", message), status=403)
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


# --- web requests ------------------------------------------------------------------------
UNMATCHED_ROUTE = "unmatched"


def route_of(request) -> str:
    """The route template that answered (``api/v1/expo/<str:app_key>/manifest``), or the
    view's name where the route is a regular expression (DRF's routers: ``job-detail``);
    never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED_ROUTE
    if match.route and not _REGEX_ROUTE.search(match.route):
        return match.route
    return match.view_name or UNMATCHED_ROUTE


_REGEX_ROUTE = re.compile(r"[()^$\\]")


class RequestMetricsMiddleware:
    """Counts and times every request Django answers, by route template, method and status."""

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in self.METHODS else "other"
        route = route_of(request)
        HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        return response


class WebsocketGauge:
    """ASGI wrapper counting the websocket connections open in this process."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        WEBSOCKETS_OPEN.inc()
        try:
            return await self.app(scope, receive, send)
        finally:
            WEBSOCKETS_OPEN.dec()
