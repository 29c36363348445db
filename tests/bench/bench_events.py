"""Build events: batch ingestion throughput through the real HTTP endpoint.

A daphne server on a free port serves the app on the benchmark's PostgreSQL and Redis; two
client threads (one per core) post JSON batches of 500 events with ``X-Build-Token`` over
keep-alive connections, as many build hosts would. Each batch carries 10 runs of 50 events
(start, 20 stages started and completed, 8 heartbeats, completion), every one with an
eventId. Target: at least 2,000 events a second.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings

from buildevents.models import BuildRunEvent
from builds.choices import TokenScope
from builds.services import create_account, create_api_token
from tests.support.net import free_port

TARGET_EVENTS_PER_SECOND = 2000
RUNS_PER_BATCH = 10
CLIENTS = 2
PATH = "/api/v1/internal/build-events/"


def run_events(run_id: str) -> list[dict]:
    base = {"runId": run_id}
    events = [
        {
            **base,
            "event": "build_started",
            "env": "prod",
            "origin": "server",
            "command": "npm run build:deploy",
            "host": "bench",
            "pid": 1,
            "branch": "main",
            "commit": "0" * 40,
        }
    ]
    for index in range(20):
        stage = f"Stage {index}"
        events.append({**base, "event": "stage_started", "stage": stage})
        events.append({**base, "event": "stage_completed", "stage": stage, "durationMs": 1200})
        if index % 5 in (0, 3):  # 8 heartbeats among the stages
            events.append({**base, "event": "heartbeat"})
    events.append({**base, "event": "build_completed", "durationMs": 60000})
    for event in events:
        event["eventId"] = str(uuid.uuid4())
    return events


def batch_body() -> bytes:
    events = []
    for _ in range(RUNS_PER_BATCH):
        events.extend(run_events(str(uuid.uuid4())))
    return json.dumps(events).encode()


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"daphne did not listen on {port} within {seconds:g}s")


def post_batches(port: int, token: str, bodies: list, latencies: list, errors: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "X-Build-Token": token}
    try:
        for body in bodies:
            started = time.perf_counter()
            connection.request("POST", PATH, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                errors.append(f"HTTP {response.status}: {answer[:200]!r}")
                return
    except OSError as error:
        errors.append(repr(error))
    finally:
        connection.close()


def run(ctx):
    batches = 8 if ctx.quick else 40
    account = create_account(f"Bench Events {uuid.uuid4().hex[:6]}", tier="enterprise")
    token = create_api_token(account, name="bench", scopes=[TokenScope.EVENTS_WRITE]).secret
    per_batch = len(json.loads(batch_body()))
    bodies = [[batch_body() for _ in range(batches // CLIENTS)] for _ in range(CLIENTS)]
    warmup = [batch_body() for _ in range(2)]

    port = free_port()
    log_dir = Path(settings.BASE_DIR) / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BUILD_EVENTS_RATE_LIMIT": "1000000/m", "LOG_LEVEL": "WARNING"}
    with open(log_dir / "events-daphne.log", "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "buildhub.asgi:application",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, 60)
            ctx.log(f"daphne on port {port}; {batches} batches of {per_batch} events")
            errors: list = []
            post_batches(port, token, warmup, [], errors)
            latencies: list = []
            threads = [
                threading.Thread(target=post_batches, args=(port, token, share, latencies, errors))
                for share in bodies
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    if errors:
        raise RuntimeError(f"ingestion failed: {errors[0]}")
    sent = per_batch * sum(len(share) for share in bodies)
    stored = BuildRunEvent.objects.filter(run__account=account).count()
    expected_rows = sum(1 for event in json.loads(warmup[0]) if event["event"] != "heartbeat") * (
        len(warmup) + sum(len(share) for share in bodies)
    )
    if stored != expected_rows:
        raise RuntimeError(f"stored {stored} event rows, expected {expected_rows}")
    rate = sent / elapsed
    ctx.log(f"{sent} events in {elapsed:.2f}s: {rate:,.0f} events/s")
    return [
        {
            "name": f"build events: batch ingestion ({per_batch}/batch, {CLIENTS} clients)",
            "value": rate,
            "unit": "events/s",
            "target": f">= {TARGET_EVENTS_PER_SECOND:,}",
            "ok": rate >= TARGET_EVENTS_PER_SECOND,
        },
        {
            "name": f"build events: batch of {per_batch} round trip p50",
            "value": statistics.median(latencies) * 1000,
            "unit": "ms",
            "target": None,
            "ok": None,
        },
    ]
