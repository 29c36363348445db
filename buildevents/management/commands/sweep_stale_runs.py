from django.core.management.base import BaseCommand, CommandError

from buildevents.services import heartbeat_timeout, sweep_stale_runs


class Command(BaseCommand):
    help = (
        "Mark running build runs with no heartbeat for the timeout as stale and notify staff "
        "(the worker supervisor does this every BUILD_EVENTS_SWEEP_INTERVAL_SECONDS)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout",
            type=int,
            help="seconds without a heartbeat (default BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS)",
        )

    def handle(self, *args, timeout=None, **options):
        if timeout is not None and timeout < 1:
            raise CommandError("--timeout must be at least 1 second.")
        stale = sweep_stale_runs(timeout=timeout)
        seconds = int(heartbeat_timeout(timeout).total_seconds())
        for run in stale:
            self.stdout.write(f"stale: {run.run_id} {run.command or 'build'} on {run.host or '?'}")
        self.stdout.write(f"Marked {len(stale)} run(s) stale (no heartbeat for over {seconds}s).")
