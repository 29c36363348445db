"""Direct uploads: the client sends the source archive to the private bucket with a form the
API signs, then asks BuildHub to check it; the archive never passes through a web process.
Against a real S3 server (SeaweedFS, which enforces the form's policy and its signature)."""

import hashlib
import io
import zipfile

import pytest
import requests
from django.utils import timezone

from builds.choices import Tier
from publishing.models import SourceUpload
from tests.publishing.ota_helpers import make_app
from tests.support.accounts import make_account
from tests.support.api import assert_error
from tests.support.sources import source_archive

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(pro_account):
    return make_app(pro_account)


@pytest.fixture
def owner(app, api_client_for):
    return api_client_for(app.account, scopes=["builds:read", "builds:write"])


def start(client, data: bytes, filename="shop.tar.gz", **extra):
    return client.post(
        "/api/v1/apps/shop/sources/direct/",
        {"filename": filename, "size": len(data), **extra},
        format="json",
    )


def send(form: dict, data: bytes, filename="shop.tar.gz"):
    """What a client does with the form: its fields, then the file, to its URL."""
    return requests.post(
        form["url"], data=form["fields"], files={"file": (filename, data)}, timeout=30
    )


def complete(client, body):
    return client.post(body["complete_url"], format="json")


def test_an_archive_sent_to_the_bucket_is_checked_and_then_builds(s3_storage, app, owner):
    data = source_archive()
    started = start(owner, data, sha256=hashlib.sha256(data).hexdigest())
    assert started.status_code == 201, started.content
    body = started.json()
    assert body["state"] == "pending" and body["size"] == len(data)
    assert body["upload"]["url"].startswith(s3_storage.endpoint_url)
    assert body["upload"]["method"] == "POST"

    # Until it is completed, a build cannot use it.
    early = owner.post(
        "/api/v1/builds/",
        {"app": "shop", "target": "ota", "platform": "android", "source": {"upload": body["id"]}},
        format="json",
    )
    assert "complete" in assert_error(early, 400, "invalid")["message"]

    assert send(body["upload"], data).status_code in (200, 201, 204)
    done = complete(owner, body)
    assert done.status_code == 200, done.content
    assert done.json()["state"] == "ready"
    assert done.json()["sha256"] == hashlib.sha256(data).hexdigest()
    stored = SourceUpload.objects.get(pk=body["id"])
    assert stored.storage_key in s3_storage.keys(s3_storage.private_bucket)
    assert stored.expires_at > timezone.now() + timezone.timedelta(days=1)
    # Completing again answers the same.
    assert complete(owner, body).json() == done.json()

    queued = owner.post(
        "/api/v1/builds/",
        {"app": "shop", "target": "ota", "platform": "android", "source": {"upload": body["id"]}},
        format="json",
    )
    assert queued.status_code == 201, queued.content
    assert queued.json()["status"] == "queued"


def test_the_bucket_refuses_another_size_or_name_than_the_form_says(s3_storage, app, owner):
    data = source_archive()
    body = start(owner, data).json()
    form = body["upload"]

    assert send(form, data + b"more").status_code in (400, 403)
    planted = "sources/other/app/planted.tar.gz"
    renamed = {**form, "fields": {**form["fields"], "key": planted}}
    assert send(renamed, data).status_code == 403
    keys = s3_storage.keys(s3_storage.private_bucket)
    assert planted not in keys
    assert SourceUpload.objects.get(pk=body["id"]).storage_key not in keys


def test_a_form_past_its_time_is_refused_by_the_bucket(s3_storage, app, owner, settings):
    settings.SOURCE_DIRECT_UPLOAD_SECONDS = -60  # signed as already expired
    data = source_archive()
    body = start(owner, data).json()

    assert send(body["upload"], data).status_code == 403
    assert_error(complete(owner, body), 410, "expired")


def test_completing_before_the_archive_arrived_says_so_and_keeps_the_upload(s3_storage, app, owner):
    data = source_archive()
    body = start(owner, data).json()

    early = complete(owner, body)

    assert_error(early, 409, "not_uploaded")
    assert send(body["upload"], data).status_code in (200, 201, 204)
    assert complete(owner, body).json()["state"] == "ready"


def test_a_bad_archive_is_refused_on_completion_and_deleted_from_the_bucket(s3_storage, app, owner):
    junk = b"this is not an archive at all" * 10
    body = start(owner, junk).json()
    assert send(body["upload"], junk).status_code in (200, 201, 204)

    refused = complete(owner, body)

    assert_error(refused, 400, "invalid_archive")
    stored = SourceUpload.objects.get(pk=body["id"])
    assert stored.storage_key not in s3_storage.keys(s3_storage.private_bucket)
    assert SourceUpload.objects.get(pk=body["id"]).state == "pending"


def test_an_archive_of_another_format_or_checksum_than_announced_is_refused(s3_storage, app, owner):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("shop/package.json", "{}")
    as_zip = buffer.getvalue()
    mislabelled = start(owner, as_zip, filename="shop.tar.gz").json()
    send(mislabelled["upload"], as_zip)
    assert complete(owner, mislabelled).json()["error"]["code"] == "invalid_archive"

    data = source_archive()
    wrong_sum = start(owner, data, sha256="0" * 64).json()
    send(wrong_sum["upload"], data)
    refused = complete(owner, wrong_sum)
    assert_error(refused, 400, "checksum_mismatch")


def test_sizes_past_the_tier_and_bad_names_are_refused_before_any_form(s3_storage, app, owner):
    limit = app.account.effective_limits().max_source_upload_bytes
    too_big = owner.post(
        "/api/v1/apps/shop/sources/direct/",
        {"filename": "shop.tar.gz", "size": limit + 1},
        format="json",
    )
    assert_error(too_big, 413, "payload_too_large")
    bad_name = start(owner, b"x", filename="shop.rar")
    assert "filename" in assert_error(bad_name, 400, "invalid_archive")["fields"]
    no_size = owner.post(
        "/api/v1/apps/shop/sources/direct/", {"filename": "shop.zip"}, format="json"
    )
    assert "size" in assert_error(no_size, 400, "invalid")["fields"]
    assert not SourceUpload.objects.exists()


def test_without_a_bucket_the_answer_points_at_the_multipart_upload(app, owner, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    refused = start(owner, source_archive())

    error = assert_error(refused, 409, "direct_upload_unavailable")
    assert "/api/v1/apps/shop/sources/" in error["message"]


def test_another_accounts_token_cannot_complete_an_upload(s3_storage, app, owner, api_client_for):
    data = source_archive()
    body = start(owner, data).json()
    send(body["upload"], data)
    other = make_account(Tier.PRO, "Rival")
    make_app(other)
    stranger = api_client_for(other, scopes=["builds:write"])

    answer = stranger.post(f"/api/v1/apps/shop/sources/{body['id']}/complete/", format="json")

    assert_error(answer, 404, "not_found")
    assert SourceUpload.objects.get(pk=body["id"]).state == "pending"
