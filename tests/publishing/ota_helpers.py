"""The fixture React Native app as a source upload, and OTA build requests (tests, bench)."""

import io
import shutil
import tarfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from builds.models import Job
from publishing import sources
from publishing.builds import request_build
from publishing.models import App, SourceUpload

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rn-app"


def copy_fixture(tmp_path: Path, name="rn-app") -> Path:
    target = tmp_path / "sources" / name
    shutil.copytree(FIXTURE, target, ignore=shutil.ignore_patterns("node_modules"))
    return target


def upload_source(app: App, directory: Path) -> SourceUpload:
    """The app's source as a .tar.gz upload, validated and kept as the sources API does."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    archive_file = SimpleUploadedFile(f"{directory.name}.tar.gz", buffer.getvalue())
    return sources.save_upload(app.account, app, archive_file)


def make_app(account, slug="shop") -> App:
    return App.objects.create(
        account=account, slug=slug, name="Shop", platforms=["android", "ios"], runtime_version="1"
    )


def request_ota(app: App, upload: SourceUpload, platform="android") -> Job:
    job, created = request_build(
        app.account,
        {
            "app": app.slug,
            "target": "ota",
            "platform": platform,
            "stage": "build",
            "provider": "local",
            "channel": "production",
            "dry_run": False,
            "source": {"upload": str(upload.pk)},
        },
    )
    if not created:
        raise AssertionError("the build request was answered with an earlier job")
    return job
