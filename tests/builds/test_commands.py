import io
import json

import pytest
from django.core.management import CommandError, call_command

from builds.models import Account, ApiToken
from builds.services import authenticate_token

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_createaccount_on_a_tier():
    out, _ = run("createaccount", "Acme Mobile", "--tier", "pro")

    account = Account.objects.get(slug="acme-mobile")
    assert account.tier == "pro"
    assert "Created account 'acme-mobile'" in out
    assert "queue P1" in out


def test_createaccount_refuses_a_taken_slug():
    run("createaccount", "Acme")
    with pytest.raises(CommandError, match="exists already"):
        run("createaccount", "Acme")


def test_createaccount_refuses_an_unknown_tier():
    with pytest.raises(CommandError, match="invalid choice"):
        run("createaccount", "Acme", "--tier", "platinum")


def test_createtoken_prints_a_working_secret_once(pro_account):
    out, err = run(
        "createtoken",
        pro_account.slug,
        "--scopes",
        "builds:read,builds:write",
        "--expires-days",
        "30",
    )

    secret = out.strip()
    token = authenticate_token(secret)
    assert token.account == pro_account
    assert token.scopes == ["builds:read", "builds:write"]
    assert token.expires_at is not None
    assert "not shown again" in err
    assert secret not in json.dumps(list(ApiToken.objects.values()), default=str)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-account", "--scopes", "publish"], "No account"),
        (["{slug}", "--scopes", "admin:all"], "Scopes must be some of"),
        (["{slug}", "--scopes", "publish", "--expires-days", "0"], "positive number"),
    ],
)
def test_createtoken_errors(pro_account, args, message):
    args = [arg.format(slug=pro_account.slug) for arg in args]
    with pytest.raises(CommandError, match=message):
        run("createtoken", *args)
