"""Publishing in tests: storage in a temporary directory and finished OTA builds in it."""

import pytest
from django.utils import timezone

from builds.choices import JobStatus
from builds.models import Job
from publishing import artifacts
from publishing.choices import ArtifactKind, Visibility
from tests.support.s3 import RUN_ON_S3


@pytest.fixture
def tmp_storage(settings, tmp_path):
    """Public and private storage in a temporary directory for the test (on the S3 server
    instead when the run is on S3)."""
    if RUN_ON_S3:
        return tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "public", "base_url": "/media/public/"},
        },
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "private", "base_url": None},
        },
    }
    return tmp_path


def finished_ota_build(app, platform="android", content=b"\xc6\x1f\xbc\x03bundle", tmp_path=None):
    """A succeeded OTA build job of ``app`` with its bundle and sourcemap in storage."""
    job = Job.objects.create(
        kind="build.ota",
        account=app.account,
        priority_class="P1",
        status=JobStatus.SUCCEEDED,
        params={
            "app_id": app.pk,
            "app": app.slug,
            "platform": platform,
            "channel": "production",
            "target": "ota",
        },
        timeout_seconds=900,
        finished_at=timezone.now(),
        progress=100,
    )
    bundle_path = tmp_path / f"{job.pk}-{platform}.hbc"
    bundle_path.write_bytes(content)
    map_path = tmp_path / f"{job.pk}-{platform}.map"
    map_path.write_text('{"version": 3, "sources": ["App.js"], "mappings": ""}')
    key = f"{app.account.slug}/{app.slug}/{job.pk}"
    bundle = artifacts.store_file(
        bundle_path,
        account=app.account,
        kind=ArtifactKind.OTA_BUNDLE,
        key=f"{key}/index.hbc",
        job=job,
        app=app,
        platform=platform,
        visibility=Visibility.PUBLIC,
    )
    sourcemap = artifacts.store_file(
        map_path,
        account=app.account,
        kind=ArtifactKind.SOURCEMAP,
        key=f"{key}/index.map",
        job=job,
        app=app,
        platform=platform,
    )
    job.result = {"bundle_sha256": bundle.sha256, "bundle_size": bundle.size}
    job.save(update_fields=["result"])
    return job, bundle, sourcemap
