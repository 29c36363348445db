"""How long a download link lasts when SIGNED_URL_SECONDS is not set: an hour."""

import types

import pytest
from django.core import signing
from rest_framework.test import APIClient

from tests.support.api import assert_error
from tests.support.live import run_django
from tests.support.publishing import finished_ota_build
from tests.support.s3 import RUN_ON_S3


@pytest.mark.django_db
@pytest.mark.skipif(RUN_ON_S3, reason="filesystem links; tests/storage tests S3's")
def test_a_download_link_works_for_an_hour_by_default(
    app, api_client_for, tmp_storage, monkeypatch
):
    _, _, sourcemap = finished_ota_build(app, tmp_path=tmp_storage)
    owner = api_client_for(app.account, scopes=["builds:read"])
    clock = types.SimpleNamespace(time=lambda: 1_800_000_000.0)
    monkeypatch.setattr(signing, "time", clock)  # the clock the link is signed and read with

    link = owner.get(f"/api/v1/artifacts/{sourcemap.pk}/download/")["Location"]

    clock.time = lambda: 1_800_000_000.0 + 3600
    downloaded = APIClient().get(link)
    assert downloaded.status_code == 200
    assert b'"sources": ["App.js"]' in b"".join(downloaded.streaming_content)
    downloaded.close()
    clock.time = lambda: 1_800_000_000.0 + 3601
    assert_error(APIClient().get(link), 403, "link_expired")


@pytest.mark.integration  # a fresh Django process
def test_s3_links_to_private_files_last_an_hour_by_default(tmp_path):
    """Presigned S3 links (production) are made offline; no bucket is contacted."""
    result = run_django(
        "import time; time.time = lambda: 1_800_000_000.0; "
        "from django.conf import settings; "
        "from django.core.files.storage import storages; "
        "print(settings.SIGNED_URL_SECONDS); "
        "print(storages['private'].url('sourcemaps/a.map', expire=settings.SIGNED_URL_SECONDS)); "
        "print(storages['private'].url('sourcemaps/a.map'))",
        {
            "AWS_STORAGE_BUCKET_NAME": "pub",
            "AWS_PRIVATE_STORAGE_BUCKET_NAME": "priv",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_S3_REGION_NAME": "us-east-1",
            "SIGNED_URL_SECONDS": "",
        },
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    seconds, signed, storage_default = result.stdout.splitlines()
    assert seconds == "3600"
    # Signature V2 names the moment it ends, V4 the seconds from when it was signed.
    lifetime = {"Expires=1800003600", "X-Amz-Expires=3600"}
    assert any(part in lifetime for part in signed.split("?")[1].split("&")), signed
    assert any(part in lifetime for part in storage_default.split("?")[1].split("&"))
