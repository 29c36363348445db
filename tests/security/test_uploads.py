"""Source uploads through the API: every hostile archive the unpacker knows (path traversal,
absolute paths, symlinks and hard links out of the tree, devices, zip bombs, lying headers,
too many entries) is refused with 400 and its reason; an oversized body with 413; nothing is
stored and nothing is written outside the upload's own temporary file, which is removed.
"""

import os
from dataclasses import replace

import pytest

from builds.tiers import TIERS
from publishing.models import SourceUpload
from tests.support.api import assert_error
from tests.support.sources import HOSTILE, SMALL, upload

pytestmark = pytest.mark.django_db


def files_under(root) -> set[str]:
    return {str(path) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


@pytest.fixture
def upload_dirs(settings, tmp_path, tmp_storage):
    """Caps as small as the unpacker's own tests use, and Django's spooled upload files in a
    directory of the test, so anything left behind is seen."""
    settings.SOURCE_MAX_UNPACKED_MB = SMALL.max_bytes // (1024 * 1024)
    settings.SOURCE_MAX_FILES = SMALL.max_entries
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload goes through a temporary file
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    return tmp_path


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_is_written(case, upload_dirs, victim):
    data, _, reason = HOSTILE[case]
    before = files_under(upload_dirs)

    response = upload(victim.client, data, slug=victim.app.slug)

    error = assert_error(response, 400, "invalid_archive")
    assert reason in error["message"]
    assert list(SourceUpload.objects.all()) == [victim.upload]  # its pending one only
    assert files_under(upload_dirs) == before  # no stored copy, no spool file left
    assert not any(name.endswith("evil.txt") for name in files_under(upload_dirs.parent))


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 1024 * 1024 + 1000])
def test_an_oversized_upload_is_413_and_nothing_is_written(size, upload_dirs, victim, monkeypatch):
    """Far over is refused from Content-Length; just over, after the body is read."""
    pro = TIERS[victim.account.tier]
    monkeypatch.setitem(TIERS, victim.account.tier, replace(pro, max_source_upload_mb=1))
    before = files_under(upload_dirs)

    response = upload(victim.client, os.urandom(size), slug=victim.app.slug)

    assert_error(response, 413, "payload_too_large")
    assert list(SourceUpload.objects.all()) == [victim.upload]  # its pending one only
    assert files_under(upload_dirs) == before
