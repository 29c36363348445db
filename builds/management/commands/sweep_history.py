from django.conf import settings
from django.core.management.base import BaseCommand

from buildhub.processes import StopFlag
from builds import registry
from builds.retention import sweep_jobs


class Command(BaseCommand):
    help = (
        "Archive and delete finished jobs (and their logs) older than JOB_RETENTION_DAYS, "
        "then prune the other history with a retention setting (device check-ins); the "
        "worker supervisor does the same periodically, a bounded time at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=settings.JOB_RETENTION_DAYS,
            help="delete jobs finished more than this many days ago (0: none)",
        )
        parser.add_argument(
            "--batch-size", type=int, default=settings.JOB_RETENTION_BATCH, help="jobs per batch"
        )
        parser.add_argument(
            "--max-seconds", type=float, default=None, help="stop after this long (default: none)"
        )
        parser.add_argument(
            "--no-archive",
            action="store_true",
            help="delete without writing the archive (default: JOB_ARCHIVE)",
        )
        parser.add_argument("--jobs-only", action="store_true", help="leave device check-ins alone")

    def handle(self, *args, days, batch_size, max_seconds, no_archive, jobs_only, **options):
        stop = StopFlag()  # SIGTERM ends the sweep between two batches
        result = sweep_jobs(
            days=days,
            batch_size=batch_size,
            max_seconds=max_seconds,
            archive=False if no_archive else None,
            stop=stop,
        )
        self.stdout.write(f"Jobs: {result}")
        for archive in result.archives:
            self.stdout.write(f"  archive {archive}")
        if jobs_only or stop.stopping:
            return
        for task in registry.periodic_tasks(retention=True):
            self.stdout.write(f"{task.name}: {task.run() or 'nothing to delete'}")
