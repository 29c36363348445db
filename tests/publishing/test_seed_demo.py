import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from builds.models import Account, ApiToken
from publishing.models import App

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def seed(*args):
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_seed_demo_creates_admin_accounts_tokens_and_an_app(var_dir):
    out = seed()

    admin = json.loads((var_dir / "demo-admin.json").read_text())
    assert f"Admin login: admin / {admin['password']}" in out
    assert get_user_model().objects.get(username="admin").check_password(admin["password"])
    assert set(Account.objects.values_list("slug", "tier")) == {
        ("demo-free", "free"),
        ("demo-starter", "starter"),
        ("demo-pro", "pro"),
        ("demo-enterprise", "enterprise"),
    }
    assert App.objects.get(slug="demo-shop").account.slug == "demo-pro"
    tokens = json.loads((var_dir / "demo-tokens.json").read_text())
    assert oct((var_dir / "demo-tokens.json").stat().st_mode)[-3:] == "600"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['demo-enterprise']}")
    response = client.get("/api/v1/accounts/")
    assert response.json()["results"][0]["limits"]["max_bundle_mb"] == 500


def test_seed_demo_twice_keeps_what_exists(var_dir):
    seed()
    first_tokens = (var_dir / "demo-tokens.json").read_text()

    out = seed("--quiet-if-seeded")

    assert out.strip() == "Demo data present."
    assert (var_dir / "demo-tokens.json").read_text() == first_tokens
    assert Account.objects.count() == 4
    assert ApiToken.objects.count() == 4


def test_seed_demo_replaces_a_revoked_demo_token(var_dir):
    seed()
    ApiToken.objects.filter(account__slug="demo-free").update(revoked_at="2026-01-01T00:00Z")

    out = seed("--quiet-if-seeded")

    assert "token for 'demo-free'" in out
    tokens = json.loads((var_dir / "demo-tokens.json").read_text())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['demo-free']}")
    assert client.get("/api/v1/accounts/").status_code == 200
