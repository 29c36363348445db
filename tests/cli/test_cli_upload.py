"""How `buildhub build` sends a source: straight to the bucket when the server stores on S3,
as a multipart upload to the API otherwise; both end with an upload that builds can use."""

import hashlib
import tempfile

import pytest

from buildhub_cli.api import Client, CliError
from buildhub_cli.cli import send_source
from builds.services import create_api_token
from publishing.models import SourceUpload
from tests.publishing.ota_helpers import make_app
from tests.support.sources import source_archive

pytestmark = pytest.mark.django_db(transaction=True)  # the live server reads what we write


@pytest.fixture
def client(live_server, pro_account):
    make_app(pro_account)
    secret = create_api_token(pro_account, name="ci", scopes=["builds:read", "builds:write"]).secret
    return Client(live_server.url, secret)


def send(client, data: bytes) -> dict:
    with tempfile.TemporaryFile() as archive:
        archive.write(data)
        archive.seek(0)
        return send_source(client, "shop", "shop.tar.gz", archive, len(data))


def test_on_s3_the_archive_goes_to_the_bucket_and_is_completed(client, s3_storage):
    data = source_archive()

    upload = send(client, data)

    assert upload["state"] == "ready"
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    stored = SourceUpload.objects.get(pk=upload["id"])
    body = s3_storage.client().get_object(Bucket=s3_storage.private_bucket, Key=stored.storage_key)
    assert body["Body"].read() == data


def test_on_its_own_disk_the_server_takes_the_archive_itself(client, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    data = source_archive()

    upload = send(client, data)

    assert upload["state"] == "ready"
    assert (tmp_path / SourceUpload.objects.get(pk=upload["id"]).storage_key).read_bytes() == data


def test_an_archive_the_server_refuses_is_a_message(client, s3_storage):
    with pytest.raises(CliError) as refused:
        send(client, b"not an archive" * 100)

    assert refused.value.code == "invalid_archive"
    assert "not" in str(refused.value).lower()
