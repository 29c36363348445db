"""Credentials on every endpoint that takes an API token, and on the websockets.

Missing, malformed, unknown, expired and revoked tokens get 401, a token without the
endpoint's scope 403, each in the API's JSON error shape; too many requests get 429 with
Retry-After. The websockets accept, then close with a code that says why (README).
"""

import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from rest_framework.test import APIClient

from buildhub.asgi import application
from builds.choices import TokenScope
from builds.consumers import Close
from builds.models import ApiToken
from builds.services import create_api_token, revoke_api_token
from tests.security.endpoints import TOKEN_OPERATIONS, WRITE_METHODS, fill
from tests.support.api import assert_error
from tests.support.websocket import a_job, a_token, close_code, refused_with

GET_OPERATIONS = [op for op in TOKEN_OPERATIONS if op[1] == "get"]


def call(client, method, url):
    if method in WRITE_METHODS:
        return getattr(client, method)(url, {}, format="json")
    return client.get(url)


def with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def malformed_headers(good_secret: str) -> list[str]:
    key_id = good_secret.split("_")[1]
    return [
        "Bearer",
        "Bearer ",
        "Bearer bh_",
        "Bearer bh__",
        f"Bearer bh_{key_id}_",
        f"Bearer bh_{key_id}",
        f"Bearer {good_secret}_extra",
        f"Bearer {good_secret} {good_secret}",
        f"Bearer {good_secret[:-1]}",
        f"Bearer {good_secret.upper()}",
        "Bearer bh_" + "A" * 4096,
        "Bearer bh_\xe9\xe8_\xff",
        "Bearer bh_abc\x00def_ghi",
        "Bearer ../../etc/passwd",
        "Bearer ' OR 1=1 --",
        "Bearer null",
    ]


def not_recognised_headers(good_secret: str) -> list[str]:
    """Headers that do not name a bearer token at all: the request is anonymous."""
    return [
        good_secret,
        f"Token {good_secret}",
        f"Basic {good_secret}",
        "Basic b3BlcmF0b3I6b3BlcmF0b3ItcGFzcy0xMjM=",
    ]


# One owner's objects serve every operation (these calls change nothing), so each test walks
# all of them: an endpoint added to the API is in these tests at once.


@pytest.mark.django_db
def test_missing_malformed_and_unknown_tokens_are_401(victim):
    secret = victim.client.secret
    for path, method in TOKEN_OPERATIONS:
        url = fill(path, victim)
        assert_error(call(APIClient(), method, url), 401, "not_authenticated")
        for header in not_recognised_headers(secret):
            assert_error(call(with_header(header), method, url), 401, "not_authenticated")
        for header in malformed_headers(secret):
            response = call(with_header(header), method, url)
            assert_error(response, 401, "authentication_failed")
            assert response["WWW-Authenticate"].startswith("Bearer"), (method, url, header)


@pytest.mark.django_db
def test_expired_and_revoked_tokens_are_401(victim, api_client_for):
    expired = api_client_for(victim.account, expires_at=timezone.now() + dt.timedelta(hours=1))
    ApiToken.objects.filter(pk=expired.token.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    revoked = api_client_for(victim.account)
    revoke_api_token(revoked.token)

    for path, method in TOKEN_OPERATIONS:
        url = fill(path, victim)
        error = assert_error(call(expired, method, url), 401, "authentication_failed")
        assert "expired" in error["message"]
        error = assert_error(call(revoked, method, url), 401, "authentication_failed")
        assert "revoked" in error["message"]


@pytest.mark.django_db
def test_a_token_without_the_scope_is_403(victim, api_client_for):
    """Every endpoint names the scope it needs (or is for staff only); a token of other scopes
    is refused on the caller's own objects, and a read token can write nothing."""
    unrelated = api_client_for(victim.account, scopes=[TokenScope.EVENTS_WRITE])
    reader = api_client_for(victim.account, scopes=[TokenScope.BUILDS_READ])

    for path, method in TOKEN_OPERATIONS:
        url = fill(path, victim)
        assert_error(call(unrelated, method, url), 403, "permission_denied")
        if method in WRITE_METHODS:
            assert_error(call(reader, method, url), 403, "permission_denied")


# Staff-only endpoints refuse a token before counting it; the staff session's own limit is
# the same throttle.
THROTTLED = [op for op in GET_OPERATIONS if not op[0].startswith("/api/v1/admin/")]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "method"), THROTTLED)
def test_over_the_rate_limit_is_429_with_retry_after(path, method, victim, settings):
    # A day's window: django-ratelimit's windows are fixed, and a minute's could roll over
    # between the calls on a busy machine.
    settings.API_RATE_LIMIT = "3/d"
    url = fill(path, victim)
    for _ in range(3):
        assert call(victim.client, method, url).status_code != 429

    response = call(victim.client, method, url)

    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 24 * 3600


@pytest.mark.django_db
def test_the_rate_limit_counts_per_token_not_per_account(victim, api_client_for, settings):
    settings.API_RATE_LIMIT = "2/d"
    for _ in range(2):
        victim.client.get("/api/v1/accounts/")
    assert victim.client.get("/api/v1/accounts/").status_code == 429

    assert api_client_for(victim.account).get("/api/v1/accounts/").status_code == 200


# --- websockets -------------------------------------------------------------------------

FOREIGN_ORIGINS = [
    b"https://evil.example",
    b"http://localhost.evil.example",
    b"http://evil.example/localhost",
    b"null",
    b"file://",
    b"not a url at all",
]


@pytest.mark.django_db(transaction=True)
async def test_job_socket_refuses_bad_credentials_with_4401():
    job = await a_job()
    expired = await a_token(job.account)
    await sync_to_async(
        lambda: ApiToken.objects.filter(key_id=expired[3:15]).update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
    )()
    good = await a_token(job.account)

    assert await refused_with(job.pk, origin=None) == Close.UNAUTHENTICATED
    assert await refused_with(job.pk, token=expired) == Close.UNAUTHENTICATED
    for header in malformed_headers(good)[5::3]:
        token = header.removeprefix("Bearer").strip()
        assert await refused_with(job.pk, token=token) == Close.UNAUTHENTICATED, header
    # A token in the query string (kept by proxies and access logs) is not taken.
    communicator = WebsocketCommunicator(
        application, f"/ws/jobs/{job.pk}/?token={good}", headers=[(b"host", b"localhost")]
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert await close_code(communicator) == Close.UNAUTHENTICATED


@pytest.mark.django_db(transaction=True)
async def test_job_socket_refuses_foreign_origins_and_other_accounts():
    job = await a_job()
    other = await a_job("starter", "Other Co")
    good = await a_token(job.account)
    wrong_scope = await sync_to_async(
        lambda: create_api_token(job.account, name="x", scopes=[TokenScope.PUBLISH]).secret
    )()

    for origin in FOREIGN_ORIGINS:
        assert await refused_with(job.pk, token=good, origin=origin) == Close.FORBIDDEN, origin
    assert await refused_with(job.pk, token=wrong_scope) == Close.FORBIDDEN
    assert await refused_with(other.pk, token=good) == Close.NOT_FOUND


async def dashboard_close_code(origin, user=None):
    communicator = WebsocketCommunicator(
        application, "/ws/admin/dashboard/", headers=[(b"host", b"localhost"), (b"origin", origin)]
    )
    if user is not None:
        communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=10)
    if connected:
        return await close_code(communicator)
    return code


@pytest.mark.django_db(transaction=True)
async def test_dashboard_socket_needs_a_staff_session_from_this_site(django_user_model):
    staff = await sync_to_async(
        lambda: django_user_model.objects.create_user("boss", is_staff=True)
    )()
    member = await sync_to_async(lambda: django_user_model.objects.create_user("member"))()

    assert await dashboard_close_code(b"http://localhost") == 4401
    assert await dashboard_close_code(b"http://localhost", member) == 4403
    for origin in FOREIGN_ORIGINS:
        assert await dashboard_close_code(origin, staff) == 4403, origin
