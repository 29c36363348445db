import datetime as dt
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from builds.engine.claim import claim_next_job
from builds.engine.workers import heat_floor
from builds.models import ApiToken, EnterpriseLimit, HeatUp
from builds.services import authenticate_token, consume_monthly_build
from tests.builds.engine_helpers import queue_jobs, worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def account_form(account, **overrides):
    """The account change form as the admin posts it, with empty inlines."""
    data = {
        "name": account.name,
        "slug": account.slug,
        "tier": account.tier,
        "blocked_reason": "",
        "enterprise_limit-TOTAL_FORMS": "0",
        "enterprise_limit-INITIAL_FORMS": "0",
        "timeout_addons-TOTAL_FORMS": "0",
        "timeout_addons-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_account_page_shows_effective_limits(admin_client, pro_account):
    response = admin_client.get(f"/admin/builds/account/{pro_account.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "<strong>Queue</strong>: P1" in page
    assert "<strong>Concurrent builds</strong>: 2" in page
    assert "15 min (tier max 25 min, add-ons +0)" in page


def test_enterprise_limits_are_edited_inline_with_validation(admin_client, enterprise_account):
    url = f"/admin/builds/account/{enterprise_account.pk}/change/"
    inline = {
        "enterprise_limit-TOTAL_FORMS": "1",
        "enterprise_limit-0-max_timeout_minutes": "45",
        "enterprise_limit-0-max_concurrent_builds": "8",
        "enterprise_limit-0-max_bundle_size_mb": "",
        "enterprise_limit-0-notes": "",
    }

    refused = admin_client.post(url, account_form(enterprise_account, **inline))

    assert refused.status_code == 200
    assert "capped at the Enterprise tier&#x27;s maximum of 30 minutes" in refused.content.decode()
    assert not EnterpriseLimit.objects.exists()

    inline["enterprise_limit-0-max_timeout_minutes"] = "20"
    accepted = admin_client.post(url, account_form(enterprise_account, **inline))

    assert accepted.status_code == 302
    enterprise_account.refresh_from_db()
    limits = enterprise_account.effective_limits()
    assert (limits.timeout_minutes, limits.max_concurrent) == (20, 8)


def test_negative_or_absurd_limits_are_refused(admin_client, enterprise_account):
    url = f"/admin/builds/account/{enterprise_account.pk}/change/"
    inline = {
        "enterprise_limit-TOTAL_FORMS": "1",
        "enterprise_limit-0-max_timeout_minutes": "",
        "enterprise_limit-0-max_concurrent_builds": "5000",
        "enterprise_limit-0-max_bundle_size_mb": "-3",
        "enterprise_limit-0-notes": "",
    }

    response = admin_client.post(url, account_form(enterprise_account, **inline))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Ensure this value is less than or equal to 100." in page
    assert "Ensure this value is greater than or equal to" in page
    assert not EnterpriseLimit.objects.exists()


def test_blocking_on_the_account_page_goes_through_the_services(
    admin_client, pro_account, monkeypatch, django_capture_on_commit_callbacks
):
    from builds import services

    tickets = []
    monkeypatch.setattr(services, "issue_ticket", lambda: tickets.append(1))
    job = queue_jobs(pro_account, 1)[0]
    url = f"/admin/builds/account/{pro_account.pk}/change/"

    blocked = admin_client.post(url, account_form(pro_account, blocked="on"))

    assert blocked.status_code == 302
    pro_account.refresh_from_db()
    assert pro_account.blocked and pro_account.blocked_at is not None
    assert pro_account.blocked_reason == "Blocked by staff user operator."
    worker()
    assert claim_next_job("test-worker") is None

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, account_form(pro_account, name="Renamed"))

    pro_account.refresh_from_db()
    assert (pro_account.name, pro_account.blocked, pro_account.blocked_at) == (
        "Renamed",
        False,
        None,
    )
    assert tickets == [1]  # the queued jobs' workers are woken
    assert claim_next_job("test-worker").pk == job.pk


def test_token_created_in_admin_shows_its_secret_once(admin_client, pro_account):
    response = admin_client.post(
        "/admin/builds/apitoken/add/",
        {"account": pro_account.pk, "name": "ci", "scopes": ["builds:read", "publish"]},
        follow=True,
    )

    page = response.content.decode()
    secret = re.search(r"(bh_[0-9a-f]{12}_[A-Za-z0-9_-]{43})", page).group(1)
    token = authenticate_token(secret)
    assert token.account == pro_account
    assert token.scopes == ["builds:read", "publish"]
    assert "not shown again" in page
    change_page = admin_client.get(f"/admin/builds/apitoken/{token.pk}/change/").content.decode()
    assert secret not in change_page
    assert secret.split("_", 2)[2] not in str(list(ApiToken.objects.values()))


def test_token_form_shows_the_services_refusal_and_makes_no_token(admin_client, pro_account):
    response = admin_client.post(
        "/admin/builds/apitoken/add/",
        {
            "account": pro_account.pk,
            "name": "ci",
            "scopes": ["builds:read"],
            "expires_at_0": "2020-01-01",
            "expires_at_1": "00:00:00",
        },
    )

    assert response.status_code == 200
    assert "A token cannot expire in the past." in response.content.decode()
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize(
    ("workers", "minutes", "message"),
    [
        ("0", "30", "Heat-up takes 1 to 50 workers."),
        ("51", "30", "Heat-up takes 1 to 50 workers."),
        ("2", "0", "Heat-up lasts from 1 minute to 24 hours."),
        ("2", "1441", "Heat-up lasts from 1 minute to 24 hours."),
    ],
)
def test_heat_up_form_shows_the_services_refusal(admin_client, workers, minutes, message):
    response = admin_client.post(
        "/admin/builds/heatup/add/", {"workers": workers, "minutes": minutes}
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not HeatUp.objects.exists()


def test_heat_up_form_goes_through_the_service(admin_client, staff):
    assert admin_client.get("/admin/builds/heatup/add/").status_code == 200
    response = admin_client.post("/admin/builds/heatup/add/", {"workers": "3", "minutes": "90"})

    assert response.status_code == 302
    heat_up = HeatUp.objects.get()
    assert (heat_up.workers, heat_up.created_by) == (3, staff.get_username())
    left = heat_up.until - timezone.now()
    assert dt.timedelta(minutes=89) < left <= dt.timedelta(minutes=90)
    assert heat_floor() == 3
    change = admin_client.post(
        f"/admin/builds/heatup/{heat_up.pk}/change/", {"workers": "40"}, follow=True
    )
    assert change.status_code == 200
    heat_up.refresh_from_db()
    assert heat_up.workers == 3  # read-only once made: cooling down ends it


def test_revoke_action(admin_client, pro_account, api_client_for):
    client = api_client_for(pro_account)

    admin_client.post(
        "/admin/builds/apitoken/",
        {"action": "revoke", "_selected_action": [client.token.pk]},
    )

    client.token.refresh_from_db()
    assert client.token.revoked_at is not None
    assert client.get("/api/v1/accounts/").status_code == 401
    assert LogEntry.objects.get(object_id=str(client.token.pk)).get_change_message() == "Revoked"


def test_usage_list(admin_client, free_account, django_assert_max_num_queries):
    consume_monthly_build(free_account)

    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/builds/buildusage/")

    assert response.status_code == 200
    assert free_account.name in response.content.decode()


def test_admin_is_branded_and_styled(admin_client):
    page = admin_client.get("/admin/").content.decode()

    assert "BuildHub operations" in page
    assert "/static/buildhub/admin.css" in page


def test_job_admin_lists_jobs_and_cancels_through_the_engine(admin_client, pro_account):
    from builds.engine.submit import submit_job

    job, _ = submit_job(pro_account, "diagnostic.sleep", {"seconds": 1}, staff=True)

    page = admin_client.get("/admin/builds/job/").content.decode()
    assert str(job.pk) in page
    chosen = {"action": "cancel", "_selected_action": [job.pk]}
    confirm = admin_client.post("/admin/builds/job/", chosen)

    assert "You are about to <strong>cancel</strong> for 1 job" in confirm.content.decode()
    job.refresh_from_db()
    assert job.status == "queued"  # nothing happens before the operator confirms

    admin_client.post("/admin/builds/job/", {**chosen, "confirmed": "yes"})
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert LogEntry.objects.get(object_id=str(job.pk)).get_change_message() == (
        "Cancel (engine service)"
    )


def test_job_logs_are_read_only(admin_client):
    assert admin_client.get("/admin/builds/joblog/add/").status_code == 403


def test_account_page_shows_usage_and_tokens(admin_client, free_account, api_client_for):
    consume_monthly_build(free_account)
    client = api_client_for(free_account)
    page = admin_client.get(f"/admin/builds/account/{free_account.pk}/change/").content.decode()
    assert "1 of 10 builds in" in page
    assert f"bh_{client.token.key_id}_…" in page
    assert "never used" in page or "active" in page
    assert f"/admin/builds/apitoken/add/?account={free_account.pk}" in page
