import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from builds.choices import JobStatus
from builds.engine.logs import append_logs
from builds.models import Job
from publishing.choices import ArtifactKind, Visibility
from publishing.models import Artifact
from tests.builds.engine_helpers import queue_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def page_of(admin_client, job) -> str:
    response = admin_client.get(f"/admin/builds/job/{job.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_job_page_shows_state_queue_insight_and_test_ids(admin_client, free_account):
    job = queue_jobs(free_account, 1, params={"seconds": 1, "channel": "preview"})[0]
    page = page_of(admin_client, job)
    assert f'data-testid="badge-status-{job.pk}">Queued<' in page
    assert f'data-testid="badge-stage-{job.pk}">Queued<' in page
    assert f'data-testid="badge-channel-{job.pk}">preview<' in page
    assert f'data-testid="queue-position-{job.pk}">1<' in page
    assert f'data-testid="waiting-reason-{job.pk}">Worker starting...<' in page
    assert f'data-ws="/ws/jobs/{job.pk}/"' in page
    assert f'href="/admin/builds/job/{job.pk}/cancel/"' in page
    assert f'href="/admin/builds/job/{job.pk}/run-now/"' in page
    assert "/retry/" not in page


def test_job_page_lists_artifacts_with_their_test_ids(admin_client, free_account):
    job = queue_jobs(free_account, 1)[0]
    expires = timezone.now() + dt.timedelta(days=30)
    artifact = Artifact.objects.create(
        account=free_account,
        job=job,
        kind=ArtifactKind.EAS_BUILD_URL,
        url="https://expo.dev/accounts/acme/builds/123",
        visibility=Visibility.PUBLIC,
        expires_at=expires,
    )
    page = page_of(admin_client, job)
    assert f'data-testid="artifact-row-{artifact.pk}"' in page
    assert f'data-testid="text-artifact-kind-{artifact.pk}">{artifact.get_kind_display()}' in page
    assert f'data-testid="text-artifact-expiry-{artifact.pk}">{expires:%Y-%m-%d %H:%M}<' in page
    assert f'data-testid="text-artifact-size-{artifact.pk}">–<' in page
    assert 'href="https://expo.dev/accounts/acme/builds/123"' in page


def test_job_page_shows_the_log_tail(admin_client, free_account):
    job = queue_jobs(free_account, 1)[0]
    append_logs(job.pk, [(timezone.now(), "info", f"step {number}") for number in range(1, 6)])
    page = page_of(admin_client, job)
    assert 'data-after="5"' in page
    assert "step 1\n" in page and "step 5\n" in page


def test_cancel_from_the_job_page_confirms_first(admin_client, free_account, staff):
    job = queue_jobs(free_account, 1)[0]
    url = f"/admin/builds/job/{job.pk}/cancel/"
    confirm = admin_client.get(url).content.decode()
    assert "You are about to <strong>cancel</strong> for 1 job" in confirm
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED

    response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/builds/job/{job.pk}/change/"
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    entry = LogEntry.objects.get(object_id=str(job.pk))
    assert entry.user == staff


def test_a_refused_action_says_why(admin_client, free_account):
    job = queue_jobs(free_account, 1)[0]
    response = admin_client.post(f"/admin/builds/job/{job.pk}/retry/", follow=True)
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert "Only failed or timed-out jobs can be retried; this one is queued." in (
        response.content.decode()
    )
    assert not LogEntry.objects.exists()


def test_unknown_job_is_404(admin_client):
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(f"/admin/builds/job/{missing}/cancel/").status_code == 404


def test_search_finds_values_inside_params_and_result(admin_client, free_account):
    job = queue_jobs(free_account, 1, params={"seconds": 0, "ref": "release/2.4"})[0]
    other = queue_jobs(free_account, 1)[0]
    Job.objects.filter(pk=other.pk).update(result={"bundle_sha256": "ab12cd34" * 8})
    page = admin_client.get("/admin/builds/job/?q=release/2.4").content.decode()
    assert str(job.pk) in page and str(other.pk) not in page
    page = admin_client.get("/admin/builds/job/?q=ab12cd34ab12").content.decode()
    assert str(other.pk) in page and str(job.pk) not in page


def test_job_list_filters_by_tier(admin_client, free_account, pro_account):
    free_job = queue_jobs(free_account, 1)[0]
    pro_job = queue_jobs(pro_account, 1)[0]
    page = admin_client.get("/admin/builds/job/?account__tier=pro").content.decode()
    assert str(pro_job.pk) in page and str(free_job.pk) not in page
