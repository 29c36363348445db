import json

from django.core.management.base import BaseCommand

from builds.engine.insight import queue_overview


def _wait(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Command(BaseCommand):
    help = (
        "The queue now: depth and oldest wait per class, running jobs per account against "
        "its limit, and the workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def handle(self, *args, **options):
        overview = queue_overview()
        if options["json"]:
            self.stdout.write(json.dumps(overview, indent=2))
            return
        write = self.stdout.write
        write(
            f"Queue at {overview['generated_at']} (cycle position {overview['cycle_position']}, "
            f"next slot {overview['next_slot']})"
        )
        write("")
        write(f"{'class':<18} {'queued':>7} {'eligible':>9} {'oldest wait':>12}")
        for row in overview["classes"]:
            write(
                f"{row['label']:<18} {row['queued']:>7} {row['eligible']:>9} "
                f"{_wait(row['oldest_wait_seconds']):>12}"
            )
        write("")
        if overview["accounts"]:
            write(f"{'account':<32} {'tier':<11} {'running':>9} {'queued':>7}")
            for row in overview["accounts"]:
                flag = "  blocked" if row["blocked"] else ""
                write(
                    f"{row['account']:<32} {row['tier']:<11} "
                    f"{row['running']:>4}/{row['limit']:<4} {row['queued']:>7}{flag}"
                )
        else:
            write("No account has queued or running jobs.")
        write("")
        if overview["workers"]:
            write(f"{'worker':<40} {'state':<9} {'running':>8} {'last seen':>10}")
            for row in overview["workers"]:
                stale = "" if row["live"] or row["state"] == "draining" else "  (not seen lately)"
                write(
                    f"{row['id']:<40} {row['state']:<9} "
                    f"{row['running_jobs']:>4}/{row['processes']:<3} "
                    f"{_wait(row['last_seen_seconds_ago']) + ' ago':>10}{stale}"
                )
        else:
            write("No workers registered: the supervisor starts one when a job is queued.")
        write(f"Capacity: {overview['capacity']} job slot(s) on live workers.")
