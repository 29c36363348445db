import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from buildhub.errors import ServiceError
from builds.choices import MembershipRole, Tier, TokenScope
from builds.models import Account, EnterpriseLimit, Membership
from builds.services import authenticate_token, create_account, create_api_token
from publishing.choices import Platform
from publishing.models import App

ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Create demo data once: an admin user (credentials printed and kept in "
        "var/demo-admin.json), one account per tier with a token each (var/demo-tokens.json) "
        "and a demo app. Running it again keeps what exists."
    )

    def add_arguments(self, parser):
        parser.add_argument("--quiet-if-seeded", action="store_true")

    def handle(self, *args, quiet_if_seeded, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        self.created: list[str] = []
        with transaction.atomic():
            admin, password = self._admin()
            accounts = [self._account(tier) for tier in Tier.values]
            for account in accounts:
                Membership.objects.get_or_create(
                    user=admin, account=account, defaults={"role": MembershipRole.OWNER}
                )
            self._demo_app(accounts[Tier.values.index(Tier.PRO)])
            tokens = self._tokens(accounts)
        if quiet_if_seeded and not self.created:
            self.stdout.write("Demo data present.")
            return
        for line in self.created:
            self.stdout.write(f"created {line}")
        self.stdout.write(f"Admin login: {admin.username} / {password}")
        self.stdout.write(f"Demo tokens ({len(tokens)} accounts): {self._tokens_path}")

    @property
    def _admin_path(self):
        return settings.VAR_DIR / "demo-admin.json"

    @property
    def _tokens_path(self):
        return settings.VAR_DIR / "demo-tokens.json"

    def _write_private(self, path, data):
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")

    def _admin(self):
        user_model = get_user_model()
        admin = user_model.objects.filter(username=ADMIN_USERNAME).first()
        saved = json.loads(self._admin_path.read_text()) if self._admin_path.exists() else {}
        if (
            admin is not None
            and saved.get("username") == ADMIN_USERNAME
            and admin.check_password(saved.get("password", ""))
        ):
            return admin, saved["password"]
        password = secrets.token_urlsafe(12)
        if admin is None:
            admin = user_model.objects.create_superuser(
                ADMIN_USERNAME, "admin@example.com", password
            )
            self.created.append(f"admin user {ADMIN_USERNAME!r}")
        else:
            admin.set_password(password)
            admin.save(update_fields=["password"])
            self.created.append(f"new password for {ADMIN_USERNAME!r}")
        self._write_private(self._admin_path, {"username": ADMIN_USERNAME, "password": password})
        return admin, password

    def _account(self, tier):
        slug = f"demo-{tier}"
        account = Account.objects.filter(slug=slug).first()
        if account is None:
            account = create_account(f"Demo {Tier(tier).label}", tier=tier, slug=slug)
            self.created.append(f"account {slug!r}")
            if tier == Tier.ENTERPRISE:
                EnterpriseLimit.objects.create(
                    account=account, max_bundle_size_mb=500, notes="Demo contract"
                )
        return account

    def _demo_app(self, account):
        _, created = App.objects.get_or_create(
            account=account,
            slug="demo-shop",
            defaults={
                "name": "Demo Shop",
                "platforms": [Platform.ANDROID, Platform.IOS],
                "runtime_version": "1.0.0",
            },
        )
        if created:
            self.created.append(f"app 'demo-shop' of {account.slug!r}")

    def _tokens(self, accounts):
        saved = json.loads(self._tokens_path.read_text()) if self._tokens_path.exists() else {}
        tokens = {}
        for account in accounts:
            secret = saved.get(account.slug)
            try:
                if secret and authenticate_token(secret).account_id == account.pk:
                    tokens[account.slug] = secret
                    continue
            except ServiceError:
                pass
            issued = create_api_token(account, name="demo", scopes=TokenScope.values)
            tokens[account.slug] = issued.secret
            self.created.append(f"token for {account.slug!r}")
        self._write_private(self._tokens_path, tokens)
        return tokens
