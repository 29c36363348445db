import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.support.api import assert_error

pytestmark = pytest.mark.django_db


def test_unknown_api_url_is_json_404():
    assert_error(Client().get("/api/v1/no-such-thing/"), 404, "not_found")


def test_wrong_method_is_json_405(pro_account, api_client_for):
    response = api_client_for(pro_account).post("/api/v1/accounts/", {}, format="json")

    error = assert_error(response, 405, "method_not_allowed")
    assert "POST" in error["message"]


@pytest.mark.urls("tests.buildhub.urls")
def test_malformed_json_is_400():
    response = Client().post("/api/test/echo/", "{not json", content_type="application/json")

    assert_error(response, 400, "parse_error")


@pytest.mark.urls("tests.buildhub.urls")
def test_unsupported_media_type_is_415():
    response = Client().post("/api/test/echo/", "a=1", content_type="text/plain")

    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.urls("tests.buildhub.urls")
def test_oversized_body_is_413(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"blob": "x" * 4096})

    response = Client().post("/api/test/echo/", body, content_type="application/json")

    assert_error(response, 413, "payload_too_large")


@pytest.mark.urls("tests.buildhub.urls")
def test_unhandled_exception_is_json_500_without_a_traceback():
    client = Client(raise_request_exception=False)

    response = client.get("/api/test/crash/")

    error = assert_error(response, 500, "server_error")
    assert "secret internal detail" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert error["message"] == "Internal server error."


def test_rate_limit_is_429_with_retry_after(pro_account, api_client_for, settings, clear_cache):
    # An hour's window: four requests straddle a window's end once in hours of runs, not in
    # a few hundred as with a minute's.
    settings.API_RATE_LIMIT = "3/h"
    client = api_client_for(pro_account)

    statuses = [client.get("/api/v1/accounts/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/accounts/")
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 3600


def test_rate_limit_is_per_token(pro_account, api_client_for, settings, clear_cache):
    settings.API_RATE_LIMIT = "2/h"
    first, second = api_client_for(pro_account), api_client_for(pro_account)

    assert [first.get("/api/v1/accounts/").status_code for _ in range(3)] == [200, 200, 429]
    assert second.get("/api/v1/accounts/").status_code == 200


def test_rate_limiter_fails_open_when_redis_is_down(pro_account, api_client_for, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2},
        }
    }

    response = api_client_for(pro_account).get("/api/v1/accounts/")

    assert response.status_code == 200


def test_html_pages_outside_the_api_stay_html():
    response = APIClient().get("/admin/no-such-page/")
    assert not response["Content-Type"].startswith("application/json")
