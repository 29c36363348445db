"""Source intake: the hostile-archive matrix, uploads through the API, git sources."""

import dataclasses
import io
import os
import stat
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile

from buildhub.errors import ServiceError
from builds.tiers import TIERS
from publishing import sources
from publishing.models import SourceUpload
from publishing.sources import ArchiveRefused, Caps, unpack
from tests.publishing.archives import tar_gz, zip_bytes
from tests.support.api import assert_error
from tests.support.sources import GOOD_TAR, HOSTILE, SMALL, upload


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.fixture
def workspace(tmp_path):
    """A job-like workspace with a canary next to the target: nothing may appear beside it."""
    dest = tmp_path / "ws" / "source"
    dest.mkdir(parents=True)
    (tmp_path / "ws" / "canary").write_text("untouched")
    return dest


def extract(data: bytes, fmt: str, dest: Path | None, caps: Caps = SMALL) -> dict:
    return unpack(io.BytesIO(data), fmt, dest, caps)


# --- well-formed archives ----------------------------------------------------------------
def test_a_good_tar_gz_is_extracted_with_links_kept_inside(workspace):
    summary = extract(tar_gz(GOOD_TAR), "tar.gz", workspace)

    assert summary == {"files": 8, "bytes": 17 + 18 + 18 + 17}
    app = workspace / "myapp"
    assert (app / "src" / "index.js").is_symlink()
    assert (app / "src" / "index.js").read_text() == "export default 1;\n"
    assert (app / "README").read_bytes() == b'{"name": "myapp"}'
    assert not (app / "README").is_symlink()
    mode = (app / "bin" / "run.sh").stat().st_mode
    assert mode & stat.S_IXUSR and not mode & stat.S_ISUID  # executable, never setuid
    assert sources._single_root(workspace) == app


def test_validation_without_a_target_writes_nothing_and_counts_the_same(workspace):
    assert extract(tar_gz(GOOD_TAR), "tar.gz", None) == {"files": 8, "bytes": 70}
    assert list(workspace.iterdir()) == []


def test_a_good_zip_is_extracted(workspace):
    data = zip_bytes(
        [
            ("app/", b""),
            ("app/main.dart", b"void main() {}\n", stat.S_IFREG | 0o644),
            ("app/tool", b"#!/bin/sh\n", stat.S_IFREG | 0o755),
            ("app/link.dart", b"main.dart", stat.S_IFLNK | 0o777),
        ]
    )

    extract(data, "zip", workspace)

    assert tree(workspace) == {"app", "app/main.dart", "app/tool", "app/link.dart"}
    assert (workspace / "app" / "link.dart").read_text() == "void main() {}\n"
    assert os.access(workspace / "app" / "tool", os.X_OK)


# --- the hostile matrix --------------------------------------------------------------------


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_escapes(case, workspace):
    data, fmt, reason = HOSTILE[case]

    with pytest.raises(ArchiveRefused, match=reason):
        extract(data, fmt, None)  # the upload-time check
    with pytest.raises(ArchiveRefused, match=reason):
        extract(data, fmt, workspace)  # the extraction in a job

    assert list(workspace.iterdir()) == []  # what was written is removed
    assert tree(workspace.parent) == {"source", "canary"}
    assert not (workspace.parent.parent / "evil.txt").exists()


def test_the_format_is_read_from_the_bytes_not_the_name():
    assert sources.detect_format(tar_gz(GOOD_TAR)[:4]) == "tar.gz"
    assert sources.detect_format(zip_bytes([("a", b"")])[:4]) == "zip"
    with pytest.raises(ArchiveRefused, match="not a .tar.gz or .zip"):
        sources.detect_format(b"just text")


def test_caps_come_from_settings(settings):
    settings.SOURCE_MAX_UNPACKED_MB = 3
    settings.SOURCE_MAX_FILES = 7

    assert Caps.from_settings() == Caps(3 * 1024 * 1024, 7)
    with pytest.raises(ArchiveRefused, match="more than 7 entries"):
        unpack(io.BytesIO(tar_gz([(f"f{i}", "file", b"") for i in range(8)])), "tar.gz", None)


# --- uploads through the API ---------------------------------------------------------------
@pytest.mark.django_db
def test_an_upload_is_validated_stored_and_answered_with_its_id(
    pro_account, api_client_for, app, tmp_storage
):
    data = tar_gz(GOOD_TAR)

    response = upload(api_client_for(pro_account, scopes=["builds:write"]), data)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["size"] == len(data) and body["format"] == "tar.gz"
    stored = SourceUpload.objects.get(pk=body["id"])
    assert stored.account == pro_account and stored.app == app
    with storages["private"].open(stored.storage_key) as kept:
        assert kept.read() == data
    import hashlib

    assert body["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case", ["tar traversal", "zip absolute symlink", "tar character device", "zip bomb"]
)
def test_a_bad_archive_is_refused_with_its_reason(
    case, pro_account, api_client_for, app, tmp_storage, settings
):
    settings.SOURCE_MAX_UNPACKED_MB = 1
    data, _, reason = HOSTILE[case]

    response = upload(api_client_for(pro_account), data)

    error = assert_error(response, 400, "invalid_archive")
    assert reason in error["message"] and reason in error["fields"]["file"]
    assert not SourceUpload.objects.exists()
    assert not (tmp_storage / "private").exists() or not any((tmp_storage / "private").rglob("*.*"))


@pytest.mark.django_db
def test_uploads_that_are_not_archives_or_missing_get_400(pro_account, api_client_for, app):
    client = api_client_for(pro_account)
    assert (
        "not a .tar.gz or .zip"
        in assert_error(upload(client, b"hello"), 400, "invalid_archive")["message"]
    )
    missing = client.post("/api/v1/apps/shop/sources/", {}, format="multipart")
    assert assert_error(missing, 400, "invalid")["fields"] == {"file": "required"}
    empty = upload(client, tar_gz([]))
    assert assert_error(empty, 400, "invalid_archive")["message"] == "The archive is empty."


@pytest.mark.django_db
def test_the_tiers_upload_limit_answers_413_naming_it(
    free_account, api_client_for, tmp_storage, monkeypatch
):
    from publishing.models import App

    App.objects.create(account=free_account, slug="shop", name="Shop", platforms=["android"])
    monkeypatch.setitem(TIERS, "free", dataclasses.replace(TIERS["free"], max_source_upload_mb=1))
    client = api_client_for(free_account)

    far_over = upload(client, os.urandom(2 * 1024 * 1024))  # refused from Content-Length
    just_over = upload(client, os.urandom(1024 * 1024 + 1000))  # refused after parsing

    for response in (far_over, just_over):
        error = assert_error(response, 413, "payload_too_large")
        assert "the Free tier allows 1 MB" in error["message"]
        assert error["fields"] == {"file": "at most 1 MB"}


@pytest.mark.django_db
def test_uploads_need_write_scope_and_the_callers_app(
    pro_account, free_account, api_client_for, app
):
    data = tar_gz(GOOD_TAR)
    assert_error(
        upload(api_client_for(pro_account, scopes=["builds:read"]), data), 403, "permission_denied"
    )
    assert_error(upload(api_client_for(free_account), data), 404, "not_found")


# --- git sources -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/expo/expo.git",
        "https://gitlab.example.com:8443/team/app",
        "ssh://git@github.com/org/app.git",
        "git@github.com:org/app.git",
    ],
)
def test_git_urls_that_are_accepted(url):
    assert sources.validate_git_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc", "file://"),
        ("/srv/git/app", "file://"),
        ("../app", "file://"),
        ("git://github.com/org/app", "https:// or ssh://"),
        ("ext::sh -c touch% /tmp/pwned", "spaces"),
        ("http://github.com/org/app", "http URLs are not allowed"),
        ("https://user:secret@github.com/org/app", "credentials"),
        ("https://ghp_token@github.com/org/app", "credentials"),
        ("https://github.com/", "no repository"),
        ("https://127.0.0.1/org/app", "private"),
        ("https://localhost/org/app", "private"),
        ("https://[::1]/org/app", "private"),
        ("https://10.1.2.3/org/app", "private"),
        ("ssh://git@169.254.169.254/x", "private"),
        ("git@192.168.0.2:org/app.git", "private"),
        ("https://github.com/org/app\n", "control"),
        ("ssh://-oProxyCommand=touch@github.com/x", "must not start with '-'"),
        ("-oProxyCommand=x@github.com:org/app", "file://"),
    ],
)
def test_git_urls_that_are_refused(url, reason):
    with pytest.raises(ServiceError) as refused:
        sources.validate_git_url(url)
    assert reason in refused.value.message
    assert "source" in refused.value.fields


@pytest.mark.parametrize("ref", ["", "main", "release/1.2", "v1.0.0", "a" * 40, "feature-x_y"])
def test_git_refs_that_are_accepted(ref):
    assert sources.validate_git_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=evil",
        "-b",
        "a..b",
        "a b",
        "a~1",
        "x^",
        "a:b",
        "*",
        "a/.hidden",
        "x.lock",
        "end/",
        "a//b",
        "@",
        "a@{1}",
        "back\\slash",
        "r" * 256,
    ],
)
def test_git_refs_that_are_refused(ref):
    with pytest.raises(ServiceError, match="not a valid git ref"):
        sources.validate_git_ref(ref)


@pytest.mark.django_db
def test_expired_uploads_are_swept_unless_a_waiting_build_names_them(app, tmp_storage):
    from django.utils import timezone

    from builds.engine.submit import submit_job

    def make():
        return sources.save_upload(
            app.account, app, SimpleUploadedFile("a.tar.gz", tar_gz(GOOD_TAR))
        )

    expired, needed, fresh = make(), make(), make()
    SourceUpload.objects.filter(pk__in=[expired.pk, needed.pk]).update(expires_at=timezone.now())
    submit_job(app.account, "diagnostic.sleep", {"source": {"upload": str(needed.pk)}}, staff=True)

    assert sources.sweep_expired_sources() == 1

    assert set(SourceUpload.objects.values_list("pk", flat=True)) == {needed.pk, fresh.pk}
    private = storages["private"]
    assert not private.exists(expired.storage_key)
    assert private.exists(needed.storage_key) and private.exists(fresh.storage_key)
