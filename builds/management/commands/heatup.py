import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from buildhub.errors import ServiceError
from builds.engine import workers as worker_pool

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise CommandError(f"Duration {text!r} is not like 90s, 30m, 2h or 1d.")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Keep at least N workers warm for a while (before a known peak), or --cool-down."

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int)
        parser.add_argument("--for", dest="duration", default="1h", help="e.g. 30m, 2h, 1d")
        parser.add_argument("--cool-down", action="store_true", help="end active heat-ups now")

    def handle(self, *args, **options):
        if options["cool_down"]:
            ended = worker_pool.cool_down()
            self.stdout.write(f"Ended {ended} heat-up(s); workers scale with the queue again.")
            return
        if options["workers"] is None:
            raise CommandError("Give --workers N (or --cool-down).")
        duration = parse_duration(options["duration"])
        try:
            heat = worker_pool.heat_up(options["workers"], duration, by="manage.py heatup")
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"Heat-up: at least {heat.workers} worker(s) until {heat.until:%Y-%m-%d %H:%M} UTC."
        )
