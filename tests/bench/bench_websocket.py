"""(d) Progress latency: from the commit of ``set_progress`` to a websocket client's receipt.

A real daphne server on a free port serves ``/ws/jobs/{id}/``; a ``websockets`` client in
a thread of this process follows a running job while this process commits progress
changes one at a time. Both stamp ``time.perf_counter()``: the commit stamp is taken by an
on-commit callback registered before the engine's push, the receipt when the client has
the message. Target: p95 <= 50 ms.
"""

import json
import queue
import socket
import sys
import threading
import time

from django.db import transaction
from websockets.sync.client import connect

from builds.choices import TokenScope
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.engine.submit import submit_job
from builds.models import Worker
from builds.services import create_account, create_api_token
from tests.bench.helpers import percentile, row, started, wait_until
from tests.support.net import free_port

TARGET_P95_MS = 50


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


class Follower(threading.Thread):
    """The client: puts (receipt time, message) for every status message it gets."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True, name="bench-websocket-client")
        self.url, self.token = url, token
        self.received: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            with connect(
                self.url, additional_headers={"Authorization": f"Bearer {self.token}"}
            ) as ws:
                snapshot = json.loads(ws.recv(timeout=30))
                assert snapshot["event"] == "snapshot", snapshot
                self.ready.set()
                for text in ws:
                    at = time.perf_counter()
                    message = json.loads(text)
                    if message["event"] == "status":
                        self.received.put((at, message))
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            self.error = error
            self.ready.set()


def commit_progress(job, percent: int, stage: str) -> float:
    stamps = []
    with transaction.atomic():
        transaction.on_commit(lambda: stamps.append(time.perf_counter()))  # before the push
        if not lifecycle.set_progress(job.pk, job.lease_token, percent, stage):
            raise RuntimeError("the benchmark job lost its lease")
    return stamps[0]


def run(ctx):
    count = 60 if ctx.quick else 400
    account = create_account("Bench Websocket", tier="enterprise")
    token = create_api_token(account, name="bench", scopes=[TokenScope.BUILDS_READ]).secret
    Worker.objects.get_or_create(pk="bench-websocket", defaults={"host": "bench", "pid": 1})
    submitted = submit_job(account, "diagnostic.noop", {}, staff=True)[0]
    job = claim_next_job("bench-websocket")  # held by this process; no worker runs it
    if job is None or job.pk != submitted.pk:
        raise RuntimeError("another queued job was claimed: the queue was not empty")

    port = free_port()
    daphne = [
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "buildhub.asgi:application",
    ]  # fmt: skip
    with started(ctx, "websocket-daphne", daphne, PYTHONUNBUFFERED="1") as server:
        wait_until(lambda: accepting(port), seconds=60, what="daphne to listen", poll=0.1)
        follower = Follower(f"ws://127.0.0.1:{port}/ws/jobs/{job.pk}/", token)
        follower.start()
        follower.ready.wait(60)
        if follower.error is not None or not follower.ready.is_set():
            raise RuntimeError(f"the client could not follow the job: {follower.error}")
        latencies = []
        for step in range(-10, count):  # ten warm-up rounds first
            stage = f"bench step {step}"
            committed = commit_progress(job, step % 100, stage)
            received_at, message = follower.received.get(timeout=30)
            if message["stage"] != stage:
                raise RuntimeError(f"expected {stage!r}, got {message['stage']!r}")
            if step >= 0:
                latencies.append((received_at - committed) * 1000)
        lifecycle.succeed_job(job.pk, job.lease_token)
        follower.join(30)
        if server.poll() is not None:
            raise RuntimeError(f"daphne exited with {server.returncode}")
    ctx.log(f"(d) {len(latencies)} progress updates through daphne (python {sys.version[:6]})")
    p95 = percentile(latencies, 95)
    return [
        row("(d) websocket latency p50, commit to client", percentile(latencies, 50), "ms"),
        row(
            "(d) websocket latency p95, commit to client",
            p95,
            "ms",
            f"<= {TARGET_P95_MS}",
            p95 <= TARGET_P95_MS,
        ),
    ]
