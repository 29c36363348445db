import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from builds import registry
from builds.choices import JobStatus, LogLevel
from builds.engine.claim import claim_next_job
from builds.engine.logs import REDACTED, append_logs
from builds.models import BuildUsage, Job
from tests.builds.engine_helpers import BUILD_KIND, queue_jobs, worker
from tests.support.accounts import make_account
from tests.support.api import assert_error

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs/"


def job_url(job, verb=""):
    return f"{JOBS}{job.pk}/{verb + '/' if verb else ''}"


@pytest.fixture(autouse=True)
def fresh_rate_limits(clear_cache):
    """Rate budgets live in the shared cache: every test starts with full ones."""


@pytest.fixture
def client(pro_account, api_client_for):
    return api_client_for(pro_account)


@pytest.fixture
def staff_client(staff):
    client = APIClient()
    client.force_login(staff)
    return client


def failed_job(account, status=JobStatus.FAILED):
    job = queue_jobs(account, 1)[0]
    Job.objects.filter(pk=job.pk).update(
        status=status, attempts=3, error="boom", finished_at=timezone.now()
    )
    return job


# --- list and detail --------------------------------------------------------------------
def test_list_shows_only_the_callers_jobs_newest_first(client, pro_account, free_account):
    mine = queue_jobs(pro_account, 3)
    queue_jobs(free_account, 2)

    response = client.get(JOBS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [row["id"] for row in body["results"]] == [str(job.pk) for job in reversed(mine)]
    assert {row["account"] for row in body["results"]} == {pro_account.slug}


def test_list_filters_by_status_and_kind(client, pro_account):
    queued_sleep = queue_jobs(pro_account, 1)[0]
    queued_build = queue_jobs(pro_account, 1, kind=BUILD_KIND)[0]
    failed = failed_job(pro_account)

    def ids(query):
        response = client.get(JOBS, query)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids({"status": "queued"}) == {str(queued_sleep.pk), str(queued_build.pk)}
    assert ids({"status": "failed,queued"}) == {
        str(queued_sleep.pk),
        str(queued_build.pk),
        str(failed.pk),
    }
    assert ids({"kind": BUILD_KIND}) == {str(queued_build.pk)}
    assert ids({"kind": "diagnostic.sleep", "status": "failed"}) == {str(failed.pk)}


def test_unknown_status_filter_is_400_naming_the_field(client):
    error = assert_error(client.get(JOBS, {"status": "done"}), 400, "invalid")

    assert "status" in error["fields"]
    assert "done" in error["fields"]["status"]


def test_list_is_paginated(client, pro_account):
    queue_jobs(pro_account, 5)

    first = client.get(JOBS, {"page_size": 2}).json()
    last = client.get(JOBS, {"page_size": 2, "page": 3}).json()

    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert first["next"] and first["previous"] is None
    assert len(last["results"]) == 1 and last["next"] is None


def test_list_query_count_does_not_grow_with_the_page(
    client, pro_account, django_assert_max_num_queries
):
    worker()
    queue_jobs(pro_account, 30)
    failed_job(pro_account)

    # auth (token + touch), count, page, then the queue insight's fixed handful
    with django_assert_max_num_queries(12):
        response = client.get(JOBS, {"page_size": 200})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 31


def test_detail_has_state_progress_and_queue_insight(client, pro_account):
    worker()
    job = queue_jobs(pro_account, 1)[0]

    body = client.get(job_url(job)).json()

    assert body["id"] == str(job.pk)
    assert body["kind"] == "diagnostic.sleep"
    assert body["status"] == "queued"
    assert body["priority_class"] == "P1"
    assert body["progress"] == 0
    assert body["stage"] == "Queued"
    assert body["attempts"] == 0 and body["max_attempts"] == 3
    assert body["timeout_seconds"] == 15 * 60
    assert body["created_at"] and body["started_at"] is None
    assert body["queue_position"] == 1
    assert body["waiting_reason"] == "next in line: a worker is picking it up"
    assert body["eta_seconds"] is None  # nothing of this kind has finished yet


def test_params_and_results_never_show_secrets(client, pro_account):
    job = queue_jobs(
        pro_account,
        1,
        params={
            "seconds": 0,
            "api_token": "tok-123456",
            "env": {"EXPO_TOKEN": "expo-abcdef", "MODE": "release"},
            "source": {"git": "https://ci:hunter22@git.example.com/app.git", "ref": "main"},
            "note": "use password=letmein here",
        },
    )[0]
    Job.objects.filter(pk=job.pk).update(result={"log_url": "https://u:p@x.example/l"})

    body = client.get(job_url(job)).json()

    text = str(body)
    for secret in ("tok-123456", "expo-abcdef", "hunter22", "letmein", "u:p@"):
        assert secret not in text
    assert body["params"]["api_token"] == REDACTED
    assert body["params"]["env"] == {"EXPO_TOKEN": REDACTED, "MODE": "release"}
    assert body["params"]["source"]["git"] == f"https://{REDACTED}@git.example.com/app.git"
    assert body["params"]["seconds"] == 0


def test_another_accounts_job_is_404_everywhere(client, free_account, staff):
    theirs = queue_jobs(free_account, 1)[0]
    failed = failed_job(free_account)

    assert_error(client.get(job_url(theirs)), 404, "not_found")
    assert_error(client.get(job_url(theirs, "logs")), 404, "not_found")
    assert_error(client.post(job_url(theirs, "cancel")), 404, "not_found")
    assert_error(client.post(job_url(failed, "retry")), 404, "not_found")
    assert Job.objects.get(pk=theirs.pk).status == JobStatus.QUEUED
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED


def test_staff_session_sees_every_account(staff_client, pro_account, free_account):
    queue_jobs(pro_account, 2)
    theirs = queue_jobs(free_account, 1)[0]

    assert staff_client.get(JOBS).json()["count"] == 3
    assert staff_client.get(JOBS, {"account": free_account.slug}).json()["count"] == 1
    assert staff_client.get(job_url(theirs)).status_code == 200


# --- scopes ------------------------------------------------------------------------------
def test_read_scope_reads_and_write_scope_writes(pro_account, api_client_for):
    job = queue_jobs(pro_account, 1)[0]
    reader = api_client_for(pro_account, scopes=["builds:read"])
    writer = api_client_for(pro_account, scopes=["builds:write"])

    assert reader.get(JOBS).status_code == 200
    assert reader.get(job_url(job, "logs")).status_code == 200
    assert_error(reader.post(JOBS, {"kind": BUILD_KIND}, format="json"), 403, "permission_denied")
    assert_error(reader.post(job_url(job, "cancel")), 403, "permission_denied")
    assert_error(writer.get(JOBS), 403, "permission_denied")
    assert_error(writer.get(job_url(job)), 403, "permission_denied")
    assert writer.post(job_url(job, "cancel")).status_code == 200


def test_no_token_is_401(pro_account):
    job = queue_jobs(pro_account, 1)[0]

    assert_error(APIClient().get(job_url(job)), 401, "not_authenticated")


# --- submit ------------------------------------------------------------------------------
def test_submit_queues_a_job_and_counts_the_build(client, pro_account):
    response = client.post(
        JOBS, {"kind": BUILD_KIND, "params": {"x": 1}, "timeout_minutes": 10}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.account == pro_account
    assert job.status == JobStatus.QUEUED
    assert job.params == {"x": 1}
    assert job.timeout_seconds == 600
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert BuildUsage.objects.get(account=pro_account).builds_used == 1


def test_submit_passes_the_client_address_to_submission_checks(client, monkeypatch):
    seen = []
    monkeypatch.setattr(
        registry, "_submission_checks", [lambda **kwargs: seen.append(kwargs["request_meta"])]
    )

    client.post(JOBS, {"kind": BUILD_KIND}, format="json", REMOTE_ADDR="203.0.113.9")

    assert seen == [{"ip": "203.0.113.9"}]


def test_same_idempotency_key_returns_the_first_job_with_200(client, pro_account):
    first = client.post(JOBS, {"kind": BUILD_KIND}, format="json", HTTP_IDEMPOTENCY_KEY="ci-42")
    again = client.post(JOBS, {"kind": BUILD_KIND}, format="json", HTTP_IDEMPOTENCY_KEY="ci-42")
    other = client.post(JOBS, {"kind": BUILD_KIND}, format="json", HTTP_IDEMPOTENCY_KEY="ci-43")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert Job.objects.filter(account=pro_account).count() == 2
    assert BuildUsage.objects.get(account=pro_account).builds_used == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "no.such.kind"}, "kind"),
        ({}, "kind"),
        ({"kind": BUILD_KIND, "params": ["not", "a", "dict"]}, "params"),
        ({"kind": BUILD_KIND, "timeout_minutes": 0}, "timeout_minutes"),
        ({"kind": BUILD_KIND, "timeout_minutes": 26}, "timeout_minutes"),
    ],
)
def test_bad_submissions_are_400_naming_the_field(client, body, field):
    response = client.post(JOBS, body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Job.objects.exists()


def test_timeout_over_the_limit_names_the_limit(client):
    response = client.post(JOBS, {"kind": BUILD_KIND, "timeout_minutes": 16}, format="json")

    error = assert_error(response, 400, "timeout_limit")
    assert "limit of 15 minutes" in error["message"]
    assert error["fields"] == {"timeout_minutes": "at most 15"}


def test_staff_only_kinds_are_refused_for_tokens(client):
    response = client.post(JOBS, {"kind": "diagnostic.sleep"}, format="json")

    assert_error(response, 403, "permission_denied")
    assert not Job.objects.exists()


def test_staff_submit_for_a_named_account(staff_client, free_account):
    response = staff_client.post(
        JOBS,
        {"kind": "diagnostic.sleep", "params": {"seconds": 0}, "account": free_account.slug},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert Job.objects.get().account == free_account


def test_blocked_account_cannot_submit(client, pro_account):
    pro_account.blocked = True
    pro_account.save()

    assert_error(client.post(JOBS, {"kind": BUILD_KIND}, format="json"), 403, "account_blocked")


# --- logs --------------------------------------------------------------------------------
@pytest.fixture
def logged_job(pro_account):
    job = queue_jobs(pro_account, 1)[0]
    now = timezone.now()
    append_logs(
        job.pk,
        [
            (now, LogLevel.INFO, "cloning"),
            (now, LogLevel.WARNING, "slow mirror"),
            (now, LogLevel.INFO, "bundling"),
            (now, LogLevel.ERROR, "bundle failed: exit 1"),
        ],
    )
    return job


def test_logs_as_json_after_a_sequence_number(client, logged_job):
    everything = client.get(job_url(logged_job, "logs")).json()
    rest = client.get(job_url(logged_job, "logs"), {"after": 2}).json()
    nothing_new = client.get(job_url(logged_job, "logs"), {"after": 4}).json()

    assert [line["seq"] for line in everything["lines"]] == [1, 2, 3, 4]
    assert everything["lines"][1]["level"] == "warning"
    assert everything["lines"][1]["message"] == "slow mirror"
    assert everything["lines"][0]["ts"]
    assert everything["next_after"] == 4 and everything["has_more"] is False
    assert everything["finished"] is False
    assert [line["message"] for line in rest["lines"]] == ["bundling", "bundle failed: exit 1"]
    assert nothing_new == {"lines": [], "next_after": 4, "has_more": False, "finished": False}


def test_logs_page_with_limit(client, logged_job):
    page = client.get(job_url(logged_job, "logs"), {"limit": 3})

    body = page.json()
    assert [line["seq"] for line in body["lines"]] == [1, 2, 3]
    assert body["has_more"] is True and body["next_after"] == 3
    assert page["X-Next-After"] == "3"


@pytest.mark.parametrize("how", [{"HTTP_ACCEPT": "text/plain"}, {"format": "text"}])
def test_logs_as_plain_text(client, logged_job, how):
    query = {"after": 1, **({"format": how["format"]} if "format" in how else {})}
    headers = {key: value for key, value in how.items() if key.startswith("HTTP_")}

    response = client.get(job_url(logged_job, "logs"), query, **headers)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    lines = response.content.decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2 ") and lines[0].endswith(" WARNING slow mirror")
    assert lines[2].endswith(" ERROR bundle failed: exit 1")
    assert response["X-Next-After"] == "4"


def test_logs_errors_stay_json_when_text_is_asked(client, free_account):
    theirs = queue_jobs(free_account, 1)[0]

    response = client.get(job_url(theirs, "logs"), HTTP_ACCEPT="text/plain")

    assert_error(response, 404, "not_found")


def test_unknown_format_is_400_naming_it(client, logged_job):
    error = assert_error(client.get(job_url(logged_job, "logs"), {"format": "xml"}), 400, "invalid")

    assert "format" in error["fields"]


def test_bad_after_is_400(client, logged_job):
    error = assert_error(client.get(job_url(logged_job, "logs"), {"after": "-1"}), 400, "invalid")

    assert "after" in error["fields"]


# --- verbs -------------------------------------------------------------------------------
def test_cancel_a_queued_job_then_again_is_409(client, pro_account):
    job = queue_jobs(pro_account, 1)[0]

    response = client.post(job_url(job, "cancel"))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert_error(client.post(job_url(job, "cancel")), 409, "conflict")


def test_cancel_a_running_job_asks_its_worker(client, pro_account):
    worker()
    queue_jobs(pro_account, 1)
    job = claim_next_job("test-worker")

    body = client.post(job_url(job, "cancel")).json()

    assert body["status"] == "running" and body["cancel_requested"] is True


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.TIMED_OUT])
def test_retry_a_failed_or_timed_out_job(client, pro_account, status):
    job = failed_job(pro_account, status)

    response = client.post(job_url(job, "retry"))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "queued"
    assert body["error"] == ""
    assert body["max_attempts"] == 4  # one more attempt than it has spent


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.CANCELLED])
def test_retry_in_other_states_is_409(client, pro_account, status):
    job = queue_jobs(pro_account, 1)[0]
    Job.objects.filter(pk=job.pk).update(status=status)

    error = assert_error(client.post(job_url(job, "retry")), 409, "conflict")

    assert "failed or timed-out" in error["message"]


def test_run_now_is_staff_only(client, staff_client, pro_account):
    first, second = queue_jobs(pro_account, 2)

    assert_error(client.post(job_url(second, "run-now")), 403, "permission_denied")
    assert Job.objects.get(pk=second.pk).run_now is False

    response = staff_client.post(job_url(second, "run-now"))

    assert response.status_code == 200
    assert response.json()["run_now"] is True
    assert response.json()["queue_position"] == 1
    assert staff_client.get(job_url(first)).json()["queue_position"] == 2


def test_run_now_of_a_job_that_is_not_queued_is_409(staff_client, pro_account):
    job = failed_job(pro_account)

    assert_error(staff_client.post(job_url(job, "run-now")), 409, "conflict")


# --- per-account rate limits -------------------------------------------------------------
def test_submit_budget_is_per_account_across_tokens(pro_account, api_client_for, settings):
    settings.JOBS_SUBMIT_RATE = "2/h"
    first, second = api_client_for(pro_account), api_client_for(pro_account)
    other_account = api_client_for(make_account("pro", "Other Pro"))

    def submit(client):
        return client.post(JOBS, {"kind": BUILD_KIND}, format="json")

    assert [submit(first).status_code, submit(second).status_code] == [201, 201]
    limited = submit(first)

    error = assert_error(limited, 429, "rate_limited")
    assert error["message"]
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert_error(submit(second), 429, "rate_limited")  # a new token does not reset it
    assert submit(other_account).status_code == 201
    assert Job.objects.filter(account=pro_account).count() == 2


def test_read_budget_is_shared_by_list_detail_and_logs(client, pro_account, settings):
    settings.JOBS_READ_RATE = "3/5m"
    job = queue_jobs(pro_account, 1)[0]

    statuses = [
        client.get(JOBS).status_code,
        client.get(job_url(job)).status_code,
        client.get(job_url(job, "logs")).status_code,
    ]
    limited = client.get(job_url(job, "logs"), HTTP_ACCEPT="text/plain")

    assert statuses == [200, 200, 200]
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited["Retry-After"]) <= 300
    # Writes have their own budget.
    assert client.post(job_url(job, "cancel")).status_code == 200


def test_default_budgets_come_from_settings(settings):
    assert settings.JOBS_SUBMIT_RATE == "10/h"
    assert settings.JOBS_READ_RATE == "120/5m"


def test_backoff_shows_in_the_api(client, pro_account):
    worker()
    job = queue_jobs(pro_account, 1)[0]
    until = timezone.now().replace(microsecond=0) + dt.timedelta(minutes=2)
    Job.objects.filter(pk=job.pk).update(not_before=until)

    body = client.get(job_url(job)).json()

    assert body["waiting_reason"] == f"retry backoff until {until.isoformat()}"
