import logging
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from buildhub import metrics
from buildhub.env import env_int
from buildhub.processes import StopFlag, terminate_all
from builds import registry
from builds.engine import sandbox, workers, workspaces

logger = logging.getLogger("buildhub.supervisor")

# A worker that dies this soon after starting is restarted with a growing delay.
QUICK_EXIT_SECONDS = 10
MAX_RESTART_DELAY = 30
TICK_SECONDS = 0.5


class Supervisor:
    """Keeps the wanted number of workers (``runcluster`` processes) on this machine.

    Wanted: ``clusters`` while there is work or was some within the idle period, else zero;
    never below an active heat-up floor. Also runs the reaper, the ticket reconciler and the
    workspace sweep.
    """

    def __init__(self, clusters: int, idle_seconds: float, out):
        self.clusters = clusters
        self.idle_seconds = idle_seconds
        self.out = out
        self.command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "runcluster"]
        self.running: list[dict] = []
        self.draining: list[subprocess.Popen] = []
        self.last_active = time.monotonic()
        self.restart_delay = 1.0
        self.next_start = 0.0
        self.next_reap = 0.0
        self.next_reconcile = 0.0
        self.next_periodic: dict[str, float] = {}

    def wanted(self) -> int:
        now = time.monotonic()
        if workers.queue_is_active():
            self.last_active = now
        busy = now - self.last_active < self.idle_seconds
        return max(workers.heat_floor(), self.clusters if busy else 0)

    def _reap_exited(self, now: float) -> None:
        for slot in list(self.running):
            process = slot["process"]
            if process.poll() is None:
                continue
            self.running.remove(slot)
            lived = now - slot["started"]
            self.restart_delay = (
                min(self.restart_delay * 2, MAX_RESTART_DELAY)
                if lived < QUICK_EXIT_SECONDS
                else 1.0
            )
            self.next_start = now + self.restart_delay
            logger.warning(
                "worker pid %s exited with %s after %.0fs", process.pid, process.returncode, lived
            )
        self.draining = [process for process in self.draining if process.poll() is None]

    def scale(self) -> None:
        now = time.monotonic()
        self._reap_exited(now)
        wanted = self.wanted()
        while len(self.running) < wanted and now >= self.next_start:
            process = subprocess.Popen(self.command)
            self.running.append({"process": process, "started": now})
            self.out(
                f"Supervisor: started worker pid {process.pid} ({len(self.running)}/{wanted})."
            )
        while len(self.running) > wanted:
            slot = self.running.pop()
            slot["process"].terminate()  # the worker drains before it exits
            self.draining.append(slot["process"])
            self.out(f"Supervisor: scaling down, draining worker pid {slot['process'].pid}.")

    def sweep(self) -> None:
        now = time.monotonic()
        if now >= self.next_reap:
            self.next_reap = now + settings.REAPER_INTERVAL_SECONDS
            workers.reap_expired_leases()
            workspaces.sweep_workspaces()
            metrics.sweep_dead_processes()  # workers that died: their live gauges go
        if now >= self.next_reconcile:
            self.next_reconcile = now + settings.RECONCILE_INTERVAL_SECONDS
            workers.reconcile_tickets()
        self.run_periodic(now)

    def run_periodic(self, now: float) -> None:
        """Tasks other apps registered (e.g. retention purges), each at its own interval."""
        for task in registry.periodic_tasks():
            if now < self.next_periodic.get(task.name, 0.0):
                continue
            self.next_periodic[task.name] = now + task.interval_seconds
            try:
                outcome = task.run()
            except Exception:  # one failing task must not stop the others
                logger.exception("periodic task %r failed", task.name)
                continue
            if outcome is not None:
                self.out(f"Supervisor: {task.name}: {outcome}")

    def tick(self) -> None:
        close_old_connections()
        try:
            self.scale()
            self.sweep()
        except Exception:  # e.g. the database restarting: try again next tick
            logger.exception("supervisor tick failed")

    def stop(self, grace: float) -> None:
        terminate_all([slot["process"] for slot in self.running] + self.draining, grace)


class Command(BaseCommand):
    help = (
        "Supervise workers on this machine: scale between zero and --clusters with the queue, "
        "honour heat-up floors, restart workers that die, reap lost jobs, re-issue tickets."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--clusters",
            type=int,
            default=env_int("BUILDHUB_CLUSTERS", 1),
            help="workers to keep while there is work (each runs BUILDHUB_WORKERS jobs at once)",
        )
        parser.add_argument(
            "--idle-seconds",
            type=float,
            default=settings.WORKER_IDLE_SECONDS,
            help="scale to zero after this long with nothing queued or running",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=settings.WORKER_DRAIN_GRACE_SECONDS + settings.JOB_KILL_GRACE_SECONDS + 10,
            help="seconds to wait for workers to drain on SIGTERM",
        )

    def handle(self, *args, clusters, idle_seconds, grace, **options):
        refusal = sandbox.mode_refusal()
        if refusal:
            raise CommandError(refusal)
        stop = StopFlag()
        supervisor = Supervisor(max(clusters, 0), idle_seconds, self.stdout.write)
        self.stdout.write(
            f"Supervisor: up to {supervisor.clusters} worker(s), scale to zero after "
            f"{idle_seconds:g}s idle."
        )
        workspaces.sweep_workspaces()
        metrics.sweep_dead_processes(wipe=True)
        while not stop.stopping:
            supervisor.tick()
            time.sleep(TICK_SECONDS)
        self.stdout.write(f"Supervisor: {stop.signal_name}, stopping workers.")
        supervisor.stop(grace)
        self.stdout.write("Supervisor: stopped.")
