"""A job's admin page in a real browser: the page after the job ends live, and its artifacts
opened from the page."""

import datetime as dt
import re
import uuid
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.models import Job
from publishing import artifacts
from publishing.choices import ArtifactKind, Visibility
from publishing.models import App, Artifact
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account
from tests.support.browser import log_in, screenshot_both
from tests.support.publishing import finished_ota_build

pytestmark = [
    pytest.mark.django_db(transaction=True, reset_sequences=True),
    pytest.mark.parametrize("viewport", ["desktop"], indirect=True),
    pytest.mark.toolchain,
]

SOURCEMAP = '{"version": 3, "sources": ["App.js"], "mappings": ""}'


@pytest.fixture
def stored(db):
    """Artifacts these tests put in the stack's storage, deleted afterwards."""
    made = []
    yield made
    for artifact in made:
        artifacts.storage_for(artifact.visibility).delete(artifact.storage_key)


def a_running_job(account):
    """A job that a worker holds (a lease this test owns), so the test says when it ends;
    one finished job of the same kind before it gives the page an ETA (10 minutes)."""
    now = timezone.now()
    Job.objects.create(
        kind="diagnostic.sleep",
        account=account,
        priority_class="P1",
        status=JobStatus.SUCCEEDED,
        params={"seconds": 600},
        timeout_seconds=900,
        started_at=now - dt.timedelta(minutes=10),
        finished_at=now,
        progress=100,
    )
    lease = uuid.uuid4()
    with transaction.atomic():  # its ticket goes out on commit, when it is already running
        job = queue_jobs(account, 1, params={"seconds": 600})[0]
        Job.objects.filter(pk=job.pk).update(
            status=JobStatus.RUNNING,
            worker=worker(),
            lease_token=lease,
            lease_expires_at=now + dt.timedelta(hours=1),
            started_at=now,
            attempts=1,
            stage="Sleeping",
            progress=40,
        )
    return job, lease


def test_the_job_page_shows_the_end_of_a_job_without_a_reload(page, operator, tmp_path, stored):
    account = make_account("pro", "Live End Co")
    job, lease = a_running_job(account)
    log_in(page)
    page.goto(f"/admin/builds/job/{job.pk}/change/")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    heading = page.get_by_test_id(f"text-job-heading-{job.pk}")
    eta = page.get_by_test_id(f"eta-{job.pk}")
    cancel = page.get_by_test_id(f"button-cancel-{job.pk}")

    expect(heading).to_have_text(f"diagnostic.sleep {job.pk} (running)")
    expect(page).to_have_title(re.compile(r"\(running\)"))
    expect(eta).to_have_text(re.compile(r"^(9m|10m) "))
    expect(cancel).to_be_visible()
    expect(page.get_by_test_id("live-text")).to_have_text("Live")

    map_path = tmp_path / "index.map"
    map_path.write_text(SOURCEMAP)
    sourcemap = artifacts.store_file(
        map_path,
        account=account,
        kind=ArtifactKind.SOURCEMAP,
        key=f"{account.slug}/live/{job.pk}/index.map",
        job=job,
        visibility=Visibility.PRIVATE,
    )
    stored.append(sourcemap)
    assert lifecycle.succeed_job(job.pk, lease, {"ok": True}) is not None

    expect(page.get_by_test_id(f"badge-status-{job.pk}")).to_have_text("Succeeded")
    expect(heading).to_have_text(f"diagnostic.sleep {job.pk} (succeeded)")
    expect(page).to_have_title(re.compile(r"\(succeeded\)"))
    expect(eta).to_have_text("–")
    expect(cancel).to_have_count(0)
    expect(page.get_by_test_id(f"progress-text-{job.pk}")).to_have_text("100%")
    # What only the server knew comes too: the artifact the job left.
    expect(page.get_by_test_id(f"text-artifact-kind-{sourcemap.pk}")).to_contain_text("Sourcemap")
    expect(page.get_by_test_id(f"button-artifact-open-{sourcemap.pk}")).to_be_visible()
    assert page.evaluate("window.loadedOnce") is True
    screenshot_both(page, "job-ended-live")


def test_a_failed_job_offers_retry_and_shows_its_error_without_a_reload(page, operator):
    account = make_account("pro", "Live Fail Co")
    job, lease = a_running_job(account)
    log_in(page)
    page.goto(f"/admin/builds/job/{job.pk}/change/")
    page.evaluate("window.loadedOnce = true")
    expect(page.get_by_test_id("live-text")).to_have_text("Live")
    expect(page.get_by_test_id(f"button-retry-{job.pk}")).to_have_count(0)

    lifecycle.fail_job(job.pk, lease, "the bundle step exited with 3", retryable=False)

    expect(page.get_by_test_id(f"badge-status-{job.pk}")).to_have_text("Failed")
    expect(page.get_by_test_id(f"text-job-heading-{job.pk}")).to_have_text(
        f"diagnostic.sleep {job.pk} (failed)"
    )
    expect(page.get_by_test_id(f"error-{job.pk}")).to_contain_text("exited with 3")
    expect(page.get_by_test_id(f"button-retry-{job.pk}")).to_be_visible()
    expect(page.get_by_test_id(f"button-cancel-{job.pk}")).to_have_count(0)
    assert page.evaluate("window.loadedOnce") is True


def test_button_artifact_open_opens_the_artifact(page, operator, tmp_path, stored):
    account = make_account("pro", "Artifact Co")
    app = App.objects.create(account=account, name="Shop", slug="shop")
    job, bundle, sourcemap = finished_ota_build(app, tmp_path=tmp_path)
    stored.extend([bundle, sourcemap])
    Artifact.objects.filter(pk=sourcemap.pk).update(
        content_type="application/json"
    )  # as OTA builds store it
    log_in(page)
    page.goto(f"/admin/builds/job/{job.pk}/change/")

    # A sourcemap (JSON) opens in a new tab and shows its content.
    with page.context.expect_page() as opened:
        page.get_by_test_id(f"button-artifact-open-{sourcemap.pk}").click()
    tab = opened.value
    tab.wait_for_load_state()
    assert re.search(rf"/api/v1/artifacts/{sourcemap.pk}/file/\?token=", tab.url)
    expect(tab.locator("body")).to_contain_text('"sources": ["App.js"]')
    tab.close()

    # A Hermes bundle is bytes: the browser downloads exactly what was built.
    with page.expect_download() as downloading:
        page.get_by_test_id(f"button-artifact-open-{bundle.pk}").click()
    download = downloading.value
    assert download.suggested_filename.endswith(".hbc")
    assert Path(download.path()).read_bytes() == b"\xc6\x1f\xbc\x03bundle"
