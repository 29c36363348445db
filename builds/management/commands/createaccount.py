from django.core.management.base import BaseCommand, CommandError

from buildhub.errors import ServiceError
from builds.choices import Tier
from builds.services import create_account


class Command(BaseCommand):
    help = "Create a customer account on a tier."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--tier", choices=Tier.values, default=Tier.FREE)
        parser.add_argument("--slug", default="", help="defaults to the name, slugified")

    def handle(self, *args, name, tier, slug, **options):
        try:
            account = create_account(name, tier=tier, slug=slug)
        except ServiceError as error:
            raise CommandError(error.message) from None
        limits = account.effective_limits()
        self.stdout.write(
            f"Created account {account.slug!r} ({account.get_tier_display()}, queue "
            f"{limits.priority_class}, {limits.builds_per_month or 'unlimited'} builds/month, "
            f"{limits.max_concurrent} concurrent, {limits.timeout_minutes} min timeout)."
        )
