"""OTA: build time of the fixture app, and the device update check under load.

- Builds: the fixture React Native app (tests/fixtures/rn-app) through the engine as a worker
  runs it (npm ci, Metro, hermesc, sourcemaps, upload): once with an empty Metro cache
  (cold; npm's package cache is warm, as on any worker that built before) and then again
  with the cache warm.
- The sandbox's cost: warm builds with ``BUILD_SANDBOX=bwrap`` and ``off`` in alternating
  rounds (medians of each, with the machine's CPU time per build), and a
  step alone (``/bin/true`` through the sandbox and as a plain child, 20 each).
- The same device's check in each protocol (BuildHub's, Expo's signed multipart manifest,
  CodePush's) on one daphne per core, in alternating rounds, p95 and daphne CPU per check.
- Update check: the built bundle is published, a real daphne serves the project on loopback,
  and 100 concurrent clients (plain asyncio, one keep-alive connection each) ask
  ``GET /api/v1/updates/check`` with the app key; p50 and p95 of the request latency.
"""

import asyncio
import gc
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
from django.db import close_old_connections
from django.test import override_settings

from builds.choices import JobStatus, Tier
from builds.engine import sandbox
from builds.engine.runner import run_next_job
from builds.models import Job
from publishing import asgi, checkins, codepush, edge, releases, signing
from tests.bench.helpers import percentile, row, started_web, wait_until
from tests.publishing.ota_helpers import copy_fixture, make_app, request_ota, upload_source
from tests.support.accounts import make_account

CLIENTS = 100
CORES = os.cpu_count() or 1
P95_GOAL_MS = 20


STEP_MARKERS = {  # the first log line of each step
    "npm ci": "npm ci --ignore-scripts",
    "metro": "metro ",
    "hermesc": "hermesc from",
    "compose+upload": "Hermes bytecode version",
}


def step_seconds(job: Job) -> dict[str, float]:
    """Seconds per step, from the job's log line times."""
    lines = list(job.logs.order_by("seq").values_list("ts", "message"))
    starts = []
    for step, marker in STEP_MARKERS.items():
        ts = next((ts for ts, message in lines if message.startswith(marker)), None)
        if ts is not None:
            starts.append((step, ts))
    ends = [ts for _, ts in starts[1:]] + [job.finished_at]
    return {step: (end - ts).total_seconds() for (step, ts), end in zip(starts, ends, strict=True)}


def run_until_ended(job_id, seconds=600) -> Job:
    """Run jobs as a worker does until this one has ended (another benchmark may have left
    jobs queued, or a worker of its own may be the one that runs it)."""
    deadline = time.monotonic() + seconds
    unfinished = [JobStatus.QUEUED, JobStatus.RUNNING]
    while Job.objects.filter(pk=job_id, status__in=unfinished).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end within {seconds}s")
        if run_next_job() is None:
            time.sleep(0.2)
    return Job.objects.get(pk=job_id)


def timed_build(ctx, app, source: Path) -> tuple[Job, float]:
    job = run_until_ended(request_ota(app, upload_source(app, source)).pk)
    elapsed = (job.finished_at - job.started_at).total_seconds()
    if job.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the OTA build did not succeed: {job.status} {job.error}")
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in step_seconds(job).items())
    ctx.log(f"OTA build {job.pk}: {elapsed:.2f}s ({steps}), {job.result['bundle_size']} bytes")
    return job, elapsed


async def fetch(reader, writer, request: bytes) -> int:
    """One request on a kept-alive HTTP/1.1 connection; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    )
    if headers.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    elif length := int(headers.get(b"content-length", b"0")):
        await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def devices(port: int, request: bytes, per_client: int, servers: list[psutil.Process]):
    """``CLIENTS`` devices on their own connections, each checking ``per_client`` times in a
    row; a plain asyncio client, so the load generator costs little of the shared CPU.

    The latencies, and the wall time and server CPU time from when every device was connected
    and had its first answer (a warm-up: connections set up, the release cached) to the end.
    """
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CLIENTS)]
    latencies: list[float] = []
    everyone_warm = asyncio.Barrier(CLIENTS)
    measuring = {}

    async def device(reader, writer):
        await fetch(reader, writer, request)
        if await everyone_warm.wait() == 0:
            measuring.update(wall=time.perf_counter(), cpu=cpu_seconds(servers))
        for _ in range(per_client):
            started = time.perf_counter()
            status = await fetch(reader, writer, request)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"update check answered {status}")

    try:
        await asyncio.gather(*(device(*connection) for connection in connections))
    finally:
        for _, writer in connections:
            writer.close()
    wall = time.perf_counter() - measuring["wall"]
    return latencies, wall, cpu_seconds(servers) - measuring["cpu"]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(times.user + times.system for times in (p.cpu_times() for p in processes))


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def measured(port, request: bytes, per_client: int, daphnes) -> tuple[list[float], float, float]:
    # This process holds Django and the earlier benchmarks' objects: a full collection here
    # would stall the clients and be counted as the server's latency.
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(devices(port, request, per_client, daphnes))
    finally:
        gc.unfreeze()


def protocol_requests(app, port: int) -> dict[str, bytes]:
    """The same device's check in each protocol: BuildHub's own, Expo's (signed, multipart),
    CodePush's."""
    host = f"Host: 127.0.0.1:{port}\r\n"
    deployment = next(
        d.key
        for d in codepush.deployments_of(app)
        if d.env == "production" and d.platform == "android"
    )
    own = (
        f"/api/v1/updates/check?app={app.slug}&platform=android"
        f"&runtime_version={app.runtime_version}&channel=production&device=bench-device"
    )
    return {
        "BuildHub": f"GET {own} HTTP/1.1\r\n{host}X-App-Key: {app.app_key}\r\n\r\n".encode(),
        "Expo, signed": (
            f"GET /api/v1/expo/{app.app_key}/manifest HTTP/1.1\r\n{host}"
            "expo-protocol-version: 1\r\nexpo-platform: android\r\n"
            f"expo-runtime-version: {app.runtime_version}\r\nexpo-channel-name: production\r\n"
            'accept: multipart/mixed\r\nexpo-expect-signature: sig, keyid="main"\r\n'
            "eas-client-id: bench-device\r\n\r\n"
        ).encode(),
        "CodePush": (
            f"GET /v0.1/public/codepush/update_check?deployment_key={deployment}"
            f"&app_version=1.0.0&client_unique_id=bench-device HTTP/1.1\r\n{host}\r\n"
        ).encode(),
    }


def protocol_rows(ctx, app) -> list[dict]:
    """p95 of each protocol's check at 100 clients on one daphne per core, in alternating
    rounds against the same servers (medians of the rounds), beside BuildHub's own check."""
    signing.key_for(app) or signing.generate_key(app)
    rounds = 1 if ctx.quick else 3
    p95s: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with started_web(ctx, "ota-protocols", CORES) as (port, web):
        wait_until(lambda: healthy(port), seconds=60, what="daphne to serve", poll=0.2)
        daphnes = [psutil.Process(server.pid) for server in web]
        requests = protocol_requests(app, port)
        for _ in range(rounds):
            for name, request in requests.items():
                latencies, _, server_cpu = measured(port, request, 10 if ctx.quick else 50, daphnes)
                p95s.setdefault(name, []).append(percentile(latencies, 95) * 1000)
                cpu.setdefault(name, []).append(server_cpu * 1000 / len(latencies))
    ctx.log(f"protocols: p95 {p95s}, daphne CPU per check {cpu}")
    baseline = statistics.median(p95s["BuildHub"])
    rows = []
    for name in requests:
        p95 = statistics.median(p95s[name])
        goal = None if name == "BuildHub" else p95 <= 1.5 * baseline
        rows.append(
            row(
                f"update check p95, {name} ({CLIENTS} clients, {CORES} daphne)",
                p95,
                "ms",
                None if goal is None else f"<= 1.5 x BuildHub's ({1.5 * baseline:.1f} ms)",
                goal,
            )
        )
        rows.append(row(f"  daphne CPU per check, {name}", statistics.median(cpu[name]), "ms"))
    return rows


def _cpu_per_call(call, count: int) -> float:
    """Microseconds of this process's CPU per ``call()``, over ``count`` calls."""
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count * 1e6


def checkin_rows(ctx, app) -> list[dict]:
    """What recording check-ins costs: on the request path (beside the edge's own answer to
    the same check, measured in the same rounds) and when a batch is written."""
    release = releases.current_release(app, "production")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/updates/check",
        "scheme": "http",
        "query_string": (
            f"app={app.slug}&platform=android&runtime_version={app.runtime_version}"
            "&device=bench-device"
        ).encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"x-app-key", app.app_key.encode())],
    }
    with override_settings(UPDATE_CHECK_EDGE_SECONDS=3600):
        edge.remember(_EdgeRequest(), app.app_key, "production", app.slug, release, app.pk)
    edge.learn_origin(asgi._origin_key(scope, dict(scope["headers"])), "http://127.0.0.1", [])
    calls = 2000 if ctx.quick else 20000
    expo_headers = {"eas-client-id": "bench-device", "expo-current-update-id": ""}
    codepush_query = {"client_unique_id": "bench-device", "label": "v1"}
    recorders = {
        "BuildHub": lambda: checkins.buildhub_check(
            app.pk, "production", "android", "bench-device", "", release["id"]
        ),
        "Expo": lambda: checkins.expo_check(
            app.pk, "production", "android", expo_headers, release["id"]
        ),
        "CodePush": lambda: checkins.codepush_check(
            app.pk, "production", "android", codepush_query, release["id"]
        ),
    }
    edge_answer = []
    recorded: dict[str, list[float]] = {name: [] for name in recorders}
    writes, per_write = [], 5000
    with override_settings(CHECKIN_FLUSH_SECONDS=0, CHECKIN_BATCH_SIZE=10**9):
        checkins.discard()
        for _ in range(1 if ctx.quick else 3):
            edge_answer.append(_cpu_per_call(lambda: asgi._answer(scope, "update", None), calls))
            for name, record in recorders.items():
                recorded[name].append(_cpu_per_call(record, calls))
                checkins.discard()
            for number in range(per_write):  # a batch of check-ins from 1000 devices
                checkins.buildhub_check(
                    app.pk, "production", "android", f"device-{number % 1000}", "", release["id"]
                )
            started, cpu = time.perf_counter(), time.process_time()
            checkins.flush()
            writes.append((time.perf_counter() - started, time.process_time() - cpu))
    edge.forget(app.app_key)
    baseline = statistics.median(edge_answer)
    ctx.log(f"check-ins: edge answer {edge_answer} µs, recording {recorded} µs, writes {writes}")
    return [
        row("edge's answer to a warm update check (CPU, in process)", baseline, "µs"),
        *(
            row(f"  recording its check-in, {name} (CPU, request path)", statistics.median(v), "µs")
            for name, v in recorded.items()
        ),
        row(
            f"writing a batch of check-ins, per 1000 ({per_write} from 1000 devices, wall)",
            statistics.median(wall for wall, _ in writes) * 1000 / (per_write / 1000),
            "ms",
        ),
        row(
            "  web process CPU per 1000 check-ins written",
            statistics.median(cpu for _, cpu in writes) * 1000 / (per_write / 1000),
            "ms",
        ),
    ]


class _EdgeRequest:
    """What edge.remember reads of a request that reached Django through the edge."""

    scope = {edge.SCOPE_SLOT: {}}

    def build_absolute_uri(self, path):
        return "http://127.0.0.1" + path


def update_check_rows(ctx, app, processes: int) -> list[dict]:
    """The update check against ``processes`` daphne processes serving one port."""
    servers = "one daphne" if processes == 1 else f"{processes} daphne (one per core)"
    with started_web(ctx, f"ota-daphne-{processes}", processes) as (port, web):
        wait_until(lambda: healthy(port), seconds=60, what="daphne to serve", poll=0.2)
        path = (
            f"/api/v1/updates/check?app={app.slug}&platform=android"
            f"&runtime_version={app.runtime_version}&channel=production"
        )
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-App-Key: {app.app_key}\r\n\r\n"
        ).encode()
        per_client = 10 if ctx.quick else 100
        daphnes = [psutil.Process(server.pid) for server in web]
        latencies, wall, server_cpu = measured(port, request, per_client, daphnes)
    count = len(latencies)
    p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
    ctx.log(
        f"update check, {servers}: {count} requests from {CLIENTS} clients in {wall:.2f}s, "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, daphne CPU {server_cpu * 1000 / count:.2f} ms each"
    )
    return [
        row(f"update check p50 ({CLIENTS} clients, {servers})", p50, "ms"),
        row(
            f"update check p95 ({CLIENTS} clients, {servers})",
            p95,
            "ms",
            f"<= {P95_GOAL_MS} ms (bar 500 ms)",
            p95 <= P95_GOAL_MS,
        ),
        row(f"update check throughput ({servers})", count / wall, "req/s"),
        row(f"update check server CPU per request ({servers})", server_cpu * 1000 / count, "ms"),
    ]


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent (a sandboxed step's processes are reaped inside
    its own PID namespace, so the worker's child-process accounting does not see them)."""
    times = psutil.cpu_times()
    return times.user + times.system + getattr(times, "nice", 0.0)


def sandbox_rounds(ctx, app, source: Path) -> list[dict]:
    """Warm builds with the sandbox on and off, alternating; medians of each."""
    seconds: dict[str, list[float]] = {"bwrap": [], "off": []}
    cpu: dict[str, list[float]] = {"bwrap": [], "off": []}
    for _ in range(1 if ctx.quick else 3):
        for mode in ("bwrap", "off"):
            with override_settings(BUILD_SANDBOX=mode):
                before = machine_cpu()
                _, elapsed = timed_build(ctx, app, source)
                cpu[mode].append(machine_cpu() - before)
            seconds[mode].append(elapsed)
    on, off = statistics.median(seconds["bwrap"]), statistics.median(seconds["off"])
    load = f"load average {os.getloadavg()[0]:.1f} on {CORES} CPUs"
    ctx.log(f"sandbox: warm builds {seconds}, machine CPU {cpu}; {load}")
    step_on, step_off = step_overhead(app)
    return [
        row("OTA build, warm, sandboxed (bwrap)", on, "s", load),
        row("OTA build, warm, sandbox off (same run)", off, "s"),
        row("  sandbox cost per OTA build", on - off, "s", "< 0.5 s", on - off < 0.5),
        row("  machine CPU per build, sandboxed", statistics.median(cpu["bwrap"]), "s"),
        row("  machine CPU per build, sandbox off", statistics.median(cpu["off"]), "s"),
        row("  one step through bwrap (/bin/true)", step_on * 1000, "ms"),
        row("  one step as a plain child (/bin/true)", step_off * 1000, "ms"),
    ]


def step_overhead(app, runs=20) -> tuple[float, float]:
    """Median wall time of ``/bin/true`` through the sandbox and as a plain child."""
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        box = sandbox.Sandbox(workspace, app.account_id, Path(tmp) / "state").open()
        env = sandbox.step_environment(workspace, {}, "/bin/true")
        timings: dict[str, list[float]] = {"bwrap": [], "plain": []}
        for _ in range(runs):
            for mode in ("bwrap", "plain"):
                started = time.perf_counter()
                if mode == "bwrap":
                    command = box.command(["/bin/true"], cwd=workspace)
                    subprocess.run(command, env=env, check=True, **box.popen_kwargs())
                else:
                    subprocess.run(["/bin/true"], env=env, check=True)
                timings[mode].append(time.perf_counter() - started)
    return statistics.median(timings["bwrap"]), statistics.median(timings["plain"])


def run(ctx) -> list[dict]:
    account = make_account(Tier.PRO, f"OTA Bench {uuid.uuid4().hex[:6]}")
    app = make_app(account, "bench-app")
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        source = copy_fixture(Path(tmp))
        with override_settings(OTA_METRO_CACHE_DIR=Path(tmp) / "metro-cache"):
            cold_job, cold = timed_build(ctx, app, source)
            warm = [timed_build(ctx, app, source) for _ in range(1 if ctx.quick else 3)]
            sandbox_rows = sandbox_rounds(ctx, app, source)
    job = warm[-1][0]
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, "production")
    if run_until_ended(publish_job.pk).status != JobStatus.SUCCEEDED:
        raise RuntimeError("the publish job failed")
    close_old_connections()
    warm_metro = statistics.median(step_seconds(job)["metro"] for job, _ in warm)
    return [
        row("OTA build of the fixture app, cold Metro cache", cold, "s"),
        row("OTA build of the fixture app, warm", statistics.median(t for _, t in warm), "s"),
        row("  Metro step, cold", step_seconds(cold_job)["metro"], "s"),
        row("  Metro step, warm", warm_metro, "s"),
        *sandbox_rows,
        *update_check_rows(ctx, app, 1),
        *(update_check_rows(ctx, app, CORES) if CORES > 1 else []),
        *protocol_rows(ctx, app),
        *checkin_rows(ctx, app),
    ]
