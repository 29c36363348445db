import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from builds.models import ApiToken, hash_token_secret
from builds.services import authenticate_token, create_api_token, revoke_api_token
from tests.support.api import assert_error

pytestmark = pytest.mark.django_db

ACCOUNTS_URL = "/api/v1/accounts/"


def test_secret_is_prefixed_random_and_only_its_hash_is_stored(pro_account):
    first = create_api_token(pro_account, name="ci", scopes=["builds:read"])
    second = create_api_token(pro_account, name="ci", scopes=["builds:read"])

    assert first.secret.startswith("bh_")
    secret_part = first.secret.split("_", 2)[2]
    assert len(secret_part) >= 43  # 32 random bytes, url-safe base64
    assert first.secret != second.secret
    stored = ApiToken.objects.get(pk=first.token.pk)
    assert stored.secret_hash == hash_token_secret(secret_part)
    assert secret_part not in stored.secret_hash
    assert authenticate_token(first.secret).pk == first.token.pk


def test_bearer_token_reads_own_account_with_limits_and_usage(pro_account, api_client_for):
    client = api_client_for(pro_account, scopes=["builds:read"])

    response = client.get(ACCOUNTS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    account = body["results"][0]
    assert account["slug"] == pro_account.slug
    assert account["limits"]["priority_class"] == "P1"
    assert account["limits"]["max_concurrent"] == 2
    assert account["usage"]["builds_used"] == 0
    assert account["usage"]["builds_limit"] == 500


def test_last_used_at_is_recorded(pro_account, api_client_for):
    client = api_client_for(pro_account)
    assert client.token.last_used_at is None

    client.get(ACCOUNTS_URL)

    client.token.refresh_from_db()
    assert client.token.last_used_at is not None


def test_missing_token_is_401_with_bearer_challenge():
    response = APIClient().get(ACCOUNTS_URL)

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer bh_",
        "Bearer nonsense",
        "Bearer bh_abc",
        "Bearer bh_000000000000_wrongsecret",
        "Bearer bh_a b",
    ],
)
def test_malformed_or_unknown_token_is_401(header, pro_account):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    assert_error(client.get(ACCOUNTS_URL), 401, "authentication_failed")


def test_right_key_id_with_wrong_secret_is_401(pro_account, api_client_for):
    client = api_client_for(pro_account)
    tampered = client.secret[:-4] + ("AAAA" if not client.secret.endswith("AAAA") else "BBBB")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tampered}")

    error = assert_error(client.get(ACCOUNTS_URL), 401, "authentication_failed")
    assert error["message"] == "Invalid API token."


def test_revoked_token_is_401(pro_account, api_client_for):
    client = api_client_for(pro_account)
    revoke_api_token(client.token)

    error = assert_error(client.get(ACCOUNTS_URL), 401, "authentication_failed")
    assert "revoked" in error["message"]


def test_expired_token_is_401(pro_account, api_client_for):
    client = api_client_for(pro_account, expires_at=timezone.now() + dt.timedelta(minutes=1))
    ApiToken.objects.filter(pk=client.token.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    error = assert_error(client.get(ACCOUNTS_URL), 401, "authentication_failed")
    assert "expired" in error["message"]


def test_token_without_the_scope_is_403(pro_account, api_client_for):
    client = api_client_for(pro_account, scopes=["events:write"])

    error = assert_error(client.get(ACCOUNTS_URL), 403, "permission_denied")
    assert "builds:read" in error["message"]
    assert api_client_for(pro_account, scopes=["builds:read"]).get(ACCOUNTS_URL).status_code == 200


def test_another_accounts_object_is_404_not_403(pro_account, free_account, api_client_for):
    client = api_client_for(pro_account)

    assert client.get(f"{ACCOUNTS_URL}{pro_account.slug}/").status_code == 200
    assert_error(client.get(f"{ACCOUNTS_URL}{free_account.slug}/"), 404, "not_found")
    assert_error(client.get(f"{ACCOUNTS_URL}no-such-account/"), 404, "not_found")


def test_staff_session_sees_every_account(staff, pro_account, free_account):
    client = APIClient()
    client.force_login(staff)

    response = client.get(ACCOUNTS_URL)

    assert response.status_code == 200
    assert {row["slug"] for row in response.json()["results"]} == {
        pro_account.slug,
        free_account.slug,
    }


def test_non_staff_session_user_is_refused(django_user_model, pro_account):
    user = django_user_model.objects.create_user("member", password="member-pass-123")
    client = APIClient()
    client.force_login(user)

    assert_error(client.get(ACCOUNTS_URL), 403, "permission_denied")


def test_unknown_scopes_and_past_expiry_are_refused(pro_account):
    from buildhub.errors import ServiceError

    with pytest.raises(ServiceError, match="Scopes must be some of"):
        create_api_token(pro_account, name="x", scopes=["root"])
    with pytest.raises(ServiceError, match="Scopes must be some of"):
        create_api_token(pro_account, name="x", scopes=[])
    with pytest.raises(ServiceError, match="past"):
        create_api_token(
            pro_account,
            name="x",
            scopes=["publish"],
            expires_at=timezone.now() - dt.timedelta(days=1),
        )


def test_revoking_twice_is_a_conflict(pro_account):
    from buildhub.errors import ServiceError

    issued = create_api_token(pro_account, name="x", scopes=["publish"])
    revoke_api_token(issued.token)
    with pytest.raises(ServiceError) as error:
        revoke_api_token(issued.token)
    assert error.value.status == 409
