import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from buildhub.errors import ServiceError
from builds.choices import TokenScope
from builds.models import Account
from builds.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token for an account and print its secret (shown this once only)."

    def add_arguments(self, parser):
        parser.add_argument("account", help="account slug")
        parser.add_argument(
            "--scopes",
            required=True,
            help=f"comma-separated, from: {', '.join(TokenScope.values)}",
        )
        parser.add_argument("--name", default="cli")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args, account, scopes, name, expires_days, **options):
        target = Account.objects.filter(slug=account).first()
        if target is None:
            raise CommandError(f"No account with slug {account!r}.")
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be a positive number of days.")
        expires_at = timezone.now() + dt.timedelta(days=expires_days) if expires_days else None
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        try:
            issued = create_api_token(target, name=name, scopes=scope_list, expires_at=expires_at)
        except ServiceError as error:
            raise CommandError(error.message) from None
        expiry = f"expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "never expires"
        self.stderr.write(
            f"Token {issued.token.name!r} for {target.slug} ({', '.join(issued.token.scopes)}; "
            f"{expiry}). Store the secret now: it is not shown again."
        )
        self.stdout.write(issued.secret)
