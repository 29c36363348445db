"""Admin sign-in: failed attempts are counted per address and username, then refused."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.fixture(autouse=True)
def small_budgets(settings, clear_cache):
    settings.ADMIN_LOGIN_FAILURES_PER_USER = "3/d"
    settings.ADMIN_LOGIN_FAILURES_PER_IP = "5/d"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast


def attempt(username, password, address="203.0.113.7"):
    return Client(REMOTE_ADDR=address).post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}
    )


def test_failures_for_one_username_are_refused_with_429_then_even_the_right_password(staff):
    for _ in range(3):
        assert attempt("operator", "wrong").status_code == 200

    refused = attempt("operator", "operator-pass-123")

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600
    assert b"Too many failed sign-in attempts" in refused.content
    assert "_auth_user_id" not in refused.wsgi_request.session


def test_another_address_or_username_still_signs_in(staff):
    for _ in range(3):
        attempt("operator", "wrong")

    assert attempt("operator", "operator-pass-123", address="198.51.100.9").status_code == 302
    assert attempt("someone-else", "wrong").status_code == 200


def test_one_address_trying_many_usernames_is_refused(staff):
    for number in range(5):
        assert attempt(f"guess{number}", "wrong").status_code == 200

    assert attempt("operator", "operator-pass-123").status_code == 429


def test_successful_sign_ins_are_not_counted(staff):
    for _ in range(6):
        response = attempt("operator", "operator-pass-123")
        assert response.status_code == 302
        assert response["Location"] == "/admin/"


def test_the_login_form_itself_is_always_served(staff):
    for _ in range(5):
        attempt("operator", "wrong")

    page = Client(REMOTE_ADDR="203.0.113.7").get(LOGIN)

    assert page.status_code == 200
    assert b'name="username"' in page.content
