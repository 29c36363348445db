import os
import signal
import socket
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django_q.cluster import Cluster

from buildhub.processes import StopFlag
from builds.engine import sandbox, workers

HEARTBEAT_SECONDS = 2.0


class Command(BaseCommand):
    help = (
        "Run one worker: a django-q2 cluster that claims and executes jobs, registered in "
        "the worker table. SIGTERM drains it: no new claims, running jobs get the grace "
        "period, then unfinished ones go back to the queue without spending an attempt."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=settings.WORKER_DRAIN_GRACE_SECONDS,
            help="seconds running jobs get to finish after SIGTERM",
        )

    def handle(self, *args, grace, **options):
        refusal = sandbox.mode_refusal()
        if refusal:
            raise CommandError(refusal)
        sandbox_mode = sandbox.probe()
        if sandbox_mode.startswith("broken"):
            # It still starts: its jobs fail with this message for the operator, never unsandboxed.
            self.stderr.write(f"Build sandbox unavailable on this worker: {sandbox_mode}")
        host, pid = socket.gethostname(), os.getpid()
        worker_id = f"{host}:{pid}:{int(time.time())}"
        # Every worker process of the cluster inherits this and claims as this worker.
        os.environ["BUILDHUB_WORKER_ID"] = worker_id
        workers.register_worker(worker_id, host, pid, settings.Q_CLUSTER["workers"], sandbox_mode)
        connections.close_all()  # the cluster forks; children must not share our connection

        cluster = Cluster()
        stop = StopFlag()  # replaces the handlers Cluster installed: we drain before stopping
        cluster.start()
        self.stdout.write(
            f"Worker {worker_id} running ({settings.Q_CLUSTER['workers']} processes, "
            f"build sandbox: {sandbox_mode})."
        )
        while not stop.stopping and cluster.sentinel.is_alive():
            if not workers.touch_worker(worker_id):
                workers.register_worker(
                    worker_id, host, pid, settings.Q_CLUSTER["workers"], sandbox_mode
                )
            for _ in range(int(HEARTBEAT_SECONDS / 0.25)):
                if stop.stopping:
                    break
                time.sleep(0.25)

        if stop.stopping:
            self.stdout.write(
                f"Worker {worker_id}: {stop.signal_name}, draining ({grace:g}s grace)."
            )
            workers.begin_drain(worker_id, grace)
            # Jobs release themselves at the deadline; allow them a moment to write that.
            deadline = time.monotonic() + grace + settings.JOB_KILL_GRACE_SECONDS + 5
            while workers.running_jobs_of(worker_id) and time.monotonic() < deadline:
                workers.touch_worker(worker_id)
                time.sleep(0.25)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cluster.stop()
        workers.mark_stopped(worker_id)
        self.stdout.write(f"Worker {worker_id} stopped.")
