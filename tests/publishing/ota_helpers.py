"""The fixture React Native app as a source upload, and OTA build requests (tests, bench)."""

import datetime as dt
import hashlib
import io
import shutil
import tarfile
import uuid
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from builds.models import Job
from publishing.builds import request_build
from publishing.models import App, SourceUpload

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rn-app"


def copy_fixture(tmp_path: Path, name="rn-app") -> Path:
    target = tmp_path / "sources" / name
    shutil.copytree(FIXTURE, target, ignore=shutil.ignore_patterns("node_modules"))
    return target


def upload_source(app: App, directory: Path) -> SourceUpload:
    """The app's source as a .tar.gz in private storage, as the source intake keeps it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    data = buffer.getvalue()
    key = storages["private"].save(
        f"sources/{app.account.slug}/{app.slug}/{uuid.uuid4()}.tar.gz", ContentFile(data)
    )
    return SourceUpload.objects.create(
        account=app.account,
        app=app,
        storage_key=key,
        filename=f"{directory.name}.tar.gz",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        expires_at=timezone.now() + dt.timedelta(days=1),
    )


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
