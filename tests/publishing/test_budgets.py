"""Each account's submit and read budgets across every endpoint that queues or reads jobs.

JOBS_SUBMIT_RATE is shared by POST /api/v1/jobs/, POST /api/v1/builds/, publishing a version,
retry and run-now; JOBS_READ_RATE by job, build and artifact reads. A refused request and a
repeated Idempotency-Key spend nothing.
"""

import pytest
from rest_framework.test import APIClient

from builds.models import Job
from publishing import releases
from tests.builds.engine_helpers import BUILD_KIND, queue_jobs
from tests.support.api import assert_error
from tests.support.publishing import finished_ota_build

pytestmark = pytest.mark.django_db

EXPO_DRY_RUN = {"app": "shop", "target": "expo", "platform": "android", "dry_run": True}


@pytest.fixture
def client(pro_account, api_client_for):
    return api_client_for(pro_account)


def build(client, key=None, **changes):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/builds/", {**EXPO_DRY_RUN, **changes}, format="json", **headers)


def submit_job(client):
    return client.post("/api/v1/jobs/", {"kind": BUILD_KIND}, format="json")


def publish(client, number=1):
    return client.post(
        f"/api/v1/apps/shop/versions/{number}/publish/",
        {"target_environment": "production"},
        format="json",
    )


def test_builds_publishes_and_jobs_share_one_submit_budget(
    client, pro_account, app, settings, tmp_storage
):
    settings.JOBS_SUBMIT_RATE = "3/h"
    job, _, _ = finished_ota_build(app, tmp_path=tmp_storage)
    releases.create_version(app, [job.pk])

    spent = [build(client).status_code, publish(client).status_code, submit_job(client).status_code]

    assert spent == [201, 202, 201]
    limited = build(client)
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert_error(publish(client), 429, "rate_limited")
    assert_error(submit_job(client), 429, "rate_limited")
    assert Job.objects.filter(account=pro_account).exclude(pk=job.pk).count() == 3


def test_the_submit_budget_is_per_account_whichever_token(
    pro_account, app, api_client_for, settings
):
    settings.JOBS_SUBMIT_RATE = "1/h"
    first, second = api_client_for(pro_account), api_client_for(pro_account)

    assert build(first).status_code == 201
    assert_error(build(second), 429, "rate_limited")


def test_refused_submissions_spend_nothing(client, pro_account, app, api_client_for, settings):
    settings.JOBS_SUBMIT_RATE = "1/h"

    assert_error(build(client, app="nope"), 400, "invalid")  # unknown app
    assert_error(build(client, platform="windows"), 400, "invalid")
    assert_error(publish(client, number=7), 404, "not_found")  # no such version
    reader = api_client_for(pro_account, scopes=["builds:read"])
    assert_error(build(reader), 403, "permission_denied")
    pro_account.blocked = True
    pro_account.save(update_fields=["blocked"])
    assert_error(build(client), 403, "account_blocked")
    pro_account.blocked = False
    pro_account.save(update_fields=["blocked"])

    assert build(client).status_code == 201
    assert_error(build(client), 429, "rate_limited")


def test_a_repeated_idempotency_key_spends_nothing(client, app, settings):
    settings.JOBS_SUBMIT_RATE = "2/h"

    first = build(client, key="ci-run-1")
    again = build(client, key="ci-run-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert build(client, key="ci-run-2").status_code == 201
    assert_error(build(client, key="ci-run-3"), 429, "rate_limited")


def test_retry_spends_the_submit_budget(client, pro_account, settings):
    settings.JOBS_SUBMIT_RATE = "1/h"
    failed = queue_jobs(pro_account, 2)
    Job.objects.filter(pk__in=[job.pk for job in failed]).update(status="failed", attempts=3)

    assert client.post(f"/api/v1/jobs/{failed[0].pk}/retry/").status_code == 200
    assert_error(client.post(f"/api/v1/jobs/{failed[1].pk}/retry/"), 429, "rate_limited")


def test_staff_run_now_spends_the_staff_members_own_budget(client, pro_account, staff, settings):
    settings.JOBS_SUBMIT_RATE = "1/h"
    first, second = queue_jobs(pro_account, 2)
    operator = APIClient()
    operator.force_login(staff)

    assert submit_job(client).status_code == 201  # the account's budget is spent
    assert operator.post(f"/api/v1/jobs/{first.pk}/run-now/").status_code == 200
    assert_error(operator.post(f"/api/v1/jobs/{second.pk}/run-now/"), 429, "rate_limited")


def test_build_artifact_and_job_reads_share_one_read_budget(
    client, pro_account, app, settings, tmp_storage
):
    settings.JOBS_READ_RATE = "5/5m"
    job, bundle, _ = finished_ota_build(app, tmp_path=tmp_storage)

    statuses = [
        client.get("/api/v1/builds/").status_code,
        client.get(f"/api/v1/builds/{job.pk}/").status_code,
        client.get(f"/api/v1/artifacts/{bundle.pk}/").status_code,
        client.get(f"/api/v1/artifacts/{bundle.pk}/download/").status_code,
        client.get(f"/api/v1/jobs/{job.pk}/").status_code,
    ]

    assert statuses == [200, 200, 200, 302, 200]
    limited = client.get(f"/api/v1/artifacts/{bundle.pk}/")
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited["Retry-After"]) <= 300
    assert_error(client.get("/api/v1/builds/"), 429, "rate_limited")
    assert build(client).status_code == 201  # submissions have their own budget


def test_refused_reads_spend_nothing(client, pro_account, app, settings, tmp_storage):
    settings.JOBS_READ_RATE = "1/5m"
    job, bundle, _ = finished_ota_build(app, tmp_path=tmp_storage)
    missing = "00000000-0000-0000-0000-000000000000"

    assert_error(client.get(f"/api/v1/builds/{missing}/"), 404, "not_found")
    assert_error(client.get(f"/api/v1/artifacts/{missing}/"), 404, "not_found")
    assert_error(client.get("/api/v1/jobs/", {"status": "bogus"}), 400, "invalid")

    assert client.get(f"/api/v1/artifacts/{bundle.pk}/").status_code == 200
    assert_error(client.get(f"/api/v1/builds/{job.pk}/"), 429, "rate_limited")
