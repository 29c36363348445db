"""Storage on a real S3 server (SeaweedFS, signatures enforced): what lands in the buckets,
who can read it, what the sweeps remove, and what callers see when S3 cannot be used."""

import datetime as dt

import pytest
import requests
from botocore import compat as botocore_compat
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from buildhub.errors import ServiceError
from builds.engine.runner import run_next_job
from publishing import artifacts, releases, sources
from publishing.models import Artifact, SourceUpload
from tests.publishing.ota_helpers import make_app
from tests.support.accounts import make_account
from tests.support.api import assert_error
from tests.support.publishing import finished_ota_build
from tests.support.sources import source_archive

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(pro_account):
    return make_app(pro_account)


def upload(client, data: bytes):
    return client.post(
        "/api/v1/apps/shop/sources/",
        {"file": SimpleUploadedFile("shop.tar.gz", data)},
        format="multipart",
    )


def on_disk_under_storage_root(name: str) -> list:
    root = settings.STORAGE_ROOT
    return [path for path in root.rglob(f"*{name}*")] if root.exists() else []


@pytest.mark.django_db(transaction=True)  # the publish job runs as a worker runs it
def test_uploads_builds_and_releases_land_in_the_buckets_and_nothing_on_disk(
    s3_storage, app, api_client_for, tmp_path
):
    data = source_archive()

    response = upload(api_client_for(app.account, scopes=["builds:write"]), data)
    job, bundle, sourcemap = finished_ota_build(app, tmp_path=tmp_path)
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, "production")
    assert run_next_job() == str(publish_job.pk)

    assert response.status_code == 201, response.content
    stored = SourceUpload.objects.get(pk=response.json()["id"])
    private_keys = s3_storage.keys(s3_storage.private_bucket)
    public_keys = s3_storage.keys(s3_storage.public_bucket)
    assert stored.storage_key in private_keys and sourcemap.storage_key in private_keys
    assert bundle.storage_key in public_keys
    assert bundle.storage_key not in private_keys and sourcemap.storage_key not in public_keys
    manifests = [key for key in public_keys if key.endswith("release.json")]
    assert any(f"/{app.slug}/" in key or app.slug in key for key in manifests), public_keys
    body = s3_storage.client().get_object(Bucket=s3_storage.private_bucket, Key=stored.storage_key)
    assert body["Body"].read() == data
    for name in (str(stored.pk), str(job.pk)):
        assert on_disk_under_storage_root(name) == []


def test_a_private_sourcemap_opens_only_through_a_presigned_link(
    s3_storage, app, api_client_for, tmp_path
):
    _, _, sourcemap = finished_ota_build(app, tmp_path=tmp_path)
    owner = api_client_for(app.account, scopes=["builds:read"])

    link = owner.get(f"/api/v1/artifacts/{sourcemap.pk}/download/")["Location"]

    assert link.startswith(s3_storage.endpoint_url) and "X-Amz-Signature=" in link
    opened = requests.get(link, timeout=10)
    assert opened.status_code == 200 and b'"sources": ["App.js"]' in opened.content
    unsigned = link.split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403
    signature = link.split("X-Amz-Signature=")[1][:64]
    tampered = link.replace(signature, signature[::-1])
    assert requests.get(tampered, timeout=10).status_code == 403
    stranger = api_client_for(make_account("pro", name="Other Co"), scopes=["builds:read"])
    assert stranger.get(f"/api/v1/artifacts/{sourcemap.pk}/download/").status_code == 404


def test_a_presigned_link_is_refused_by_s3_once_it_expires(
    s3_storage, app, api_client_for, tmp_path, monkeypatch
):
    _, _, sourcemap = finished_ota_build(app, tmp_path=tmp_path)
    owner = api_client_for(app.account, scopes=["builds:read"])
    signed_at = botocore_compat.get_current_datetime() - dt.timedelta(
        seconds=settings.SIGNED_URL_SECONDS + 60
    )
    # The link is signed as if SIGNED_URL_SECONDS and a minute had passed since.
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *args, **kw: signed_at)

    link = owner.get(f"/api/v1/artifacts/{sourcemap.pk}/download/")["Location"]

    refused = requests.get(link, timeout=10)
    assert refused.status_code == 403
    assert b"expired" in refused.content.lower() or b"AccessDenied" in refused.content


def test_a_public_bundle_is_served_by_the_public_bucket_without_credentials(
    s3_storage, app, api_client_for, tmp_path
):
    _, bundle, _ = finished_ota_build(app, content=b"\xc6\x1f\xbc\x03public", tmp_path=tmp_path)
    owner = api_client_for(app.account, scopes=["builds:read"])

    link = owner.get(f"/api/v1/artifacts/{bundle.pk}/download/")["Location"]

    assert "X-Amz-Signature" not in link and link.startswith(s3_storage.endpoint_url)
    downloaded = requests.get(link, timeout=10)
    assert downloaded.status_code == 200 and downloaded.content == b"\xc6\x1f\xbc\x03public"
    device = Client().get(f"/api/v1/bundles/{bundle.pk}/")
    assert device.status_code == 200
    assert b"".join(device.streaming_content) == b"\xc6\x1f\xbc\x03public"


def test_the_expiry_sweeps_delete_from_the_buckets(s3_storage, app, tmp_path):
    _, bundle, sourcemap = finished_ota_build(app, tmp_path=tmp_path)
    upload_row = sources.save_upload(
        app.account, app, SimpleUploadedFile("shop.tar.gz", source_archive())
    )
    Artifact.objects.filter(pk__in=[bundle.pk, sourcemap.pk]).update(expires_at=timezone.now())
    SourceUpload.objects.filter(pk=upload_row.pk).update(expires_at=timezone.now())
    assert upload_row.storage_key in s3_storage.keys(s3_storage.private_bucket)

    assert artifacts.sweep_expired_artifacts() == 2
    assert sources.sweep_expired_sources() == 1

    private_keys = s3_storage.keys(s3_storage.private_bucket)
    assert bundle.storage_key not in s3_storage.keys(s3_storage.public_bucket)
    assert sourcemap.storage_key not in private_keys
    assert upload_row.storage_key not in private_keys


@pytest.mark.parametrize(
    "broken",
    [
        {"public_bucket": "no-such-bucket", "private_bucket": "no-such-private-bucket"},
        {"secret_key": "not-the-secret"},
    ],
    ids=["bucket missing", "wrong credentials"],
)
def test_storage_that_cannot_be_used_is_reported_down_and_uploads_answer_503(
    broken, s3_storage, settings, app, api_client_for
):
    settings.STORAGES = {**settings.STORAGES, **s3_storage.storages(**broken)}

    health = Client().get("/healthz")
    response = upload(api_client_for(app.account, scopes=["builds:write"]), source_archive())

    assert health.status_code == 503
    assert health.json()["checks"]["storage"]["status"] == "down"
    assert "storage" in health.json()["down"]
    error = assert_error(response, 503, "storage_unavailable")
    assert "try again" in error["message"]
    assert response["Retry-After"] == "30"
    assert not SourceUpload.objects.exists()


def test_reading_an_artifact_from_storage_that_cannot_be_used_is_a_503_and_a_lost_one_410(
    s3_storage, settings, app, tmp_path
):
    _, bundle, _ = finished_ota_build(app, tmp_path=tmp_path)
    with artifacts.open_artifact(bundle) as handle:
        assert handle.read().endswith(b"bundle")

    settings.STORAGES = {**settings.STORAGES, **s3_storage.storages(secret_key="not-the-secret")}
    with pytest.raises(ServiceError) as unavailable:
        artifacts.open_artifact(bundle)
    assert (unavailable.value.status, unavailable.value.code) == (503, "storage_unavailable")

    settings.STORAGES = {**settings.STORAGES, **s3_storage.storages()}
    s3_storage.client().delete_object(Bucket=s3_storage.public_bucket, Key=bundle.storage_key)
    with pytest.raises(ServiceError) as gone:
        artifacts.open_artifact(bundle)
    assert (gone.value.status, gone.value.code) == (410, "gone")


@pytest.mark.django_db(transaction=True)  # the publish job runs as a worker runs it
def test_a_job_that_cannot_reach_storage_is_retried_not_failed(s3_storage, settings, app, tmp_path):
    job, _, _ = finished_ota_build(app, tmp_path=tmp_path)
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, "production")
    settings.STORAGES = {**settings.STORAGES, **s3_storage.storages(secret_key="not-the-secret")}

    assert run_next_job() == str(publish_job.pk)

    publish_job.refresh_from_db()
    assert publish_job.status == "queued"
    assert publish_job.attempts == 1
    assert "Storage is unavailable" in publish_job.error
    assert publish_job.stage.startswith("Retrying in")
