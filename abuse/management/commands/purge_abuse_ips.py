from django.core.management.base import BaseCommand

from abuse.services import purge_expired_ips


class Command(BaseCommand):
    help = (
        "Remove IP addresses older than ABUSE_IP_RETENTION_DAYS from abuse signals and "
        "confirmed IP patterns (the worker supervisor also runs this periodically)."
    )

    def handle(self, *args, **options):
        self.stdout.write(str(purge_expired_ips()))
