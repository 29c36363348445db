"""Cancel, retry and run-now say in the job's log who asked: the API token (its name and
id) or the staff user, as the API's log endpoint and the admin's job page show."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from builds.choices import JobStatus
from builds.engine.claim import claim_next_job
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs, worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_rate_limits(clear_cache):
    """Rate budgets live in the shared cache: every test starts with full ones."""


def api_log(client, job) -> list[str]:
    return [line["message"] for line in client.get(f"/api/v1/jobs/{job.pk}/logs/").json()["lines"]]


def admin_page(staff, job) -> str:
    admin = APIClient()
    admin.force_login(staff)
    return admin.get(f"/admin/builds/job/{job.pk}/change/").content.decode()


def test_a_cancel_through_a_token_names_the_token(pro_account, api_client_for, staff):
    client = api_client_for(pro_account)
    job = queue_jobs(pro_account, 1)[0]

    assert client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 200

    said = f'Cancelled by API token "test" (id {client.token.pk}).'
    assert api_log(client, job) == [said]
    assert said.replace('"', "&quot;") in admin_page(staff, job)


def test_a_cancel_of_a_running_job_names_who_asked(pro_account, api_client_for):
    client = api_client_for(pro_account)
    worker()
    queue_jobs(pro_account, 1)
    job = claim_next_job("test-worker")

    client.post(f"/api/v1/jobs/{job.pk}/cancel/")

    assert api_log(client, job) == [f'Cancel requested by API token "test" (id {client.token.pk}).']


def test_retry_and_run_now_by_staff_through_the_api_name_the_user(pro_account, staff):
    staff_client = APIClient()
    staff_client.force_login(staff)
    job = queue_jobs(pro_account, 1)[0]
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, finished_at=timezone.now())

    assert staff_client.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 200
    assert staff_client.post(f"/api/v1/jobs/{job.pk}/run-now/").status_code == 200

    assert api_log(staff_client, job) == [
        "Retry requested by staff user operator.",
        "Moved to the front of its class by staff user operator.",
    ]


def test_the_admins_verbs_name_the_staff_user(pro_account, staff, api_client_for):
    admin = APIClient()
    admin.force_login(staff)
    job = queue_jobs(pro_account, 1)[0]

    admin.post(f"/admin/builds/job/{job.pk}/run-now/")
    admin.post(
        "/admin/builds/job/",
        {"action": "cancel", "_selected_action": [job.pk], "confirmed": "yes"},
    )

    lines = [
        "Moved to the front of its class by staff user operator.",
        "Cancelled by staff user operator.",
    ]
    assert api_log(api_client_for(pro_account), job) == lines
    page = admin_page(staff, job)
    assert all(line in page for line in lines)
