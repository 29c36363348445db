import datetime as dt
import uuid

import pytest
from django.utils import timezone

from buildevents.models import BuildRun
from builds.choices import JobStatus
from builds.models import Job
from publishing import releases, signing
from publishing.choices import SourceState
from publishing.models import App, SourceUpload
from tests.support.accounts import make_account
from tests.support.publishing import finished_ota_build


class Victim:
    """One account's objects of every kind an object endpoint names, and its own client."""

    def __init__(
        self, account, client, app, version, build, artifact, queued_job, build_run, upload
    ):
        self.account = account
        self.client = client
        self.app = app
        self.version = version
        self.build = build
        self.artifact = artifact
        self.queued_job = queued_job
        self.build_run = build_run
        self.upload = upload

    def markers(self) -> list[str]:
        """Strings that appear in any answer that leaks one of these objects."""
        return [
            self.account.slug,
            self.app.slug,
            self.app.app_key,
            str(self.build.pk),
            str(self.artifact.pk),
            str(self.queued_job.pk),
            str(self.build_run.run_id),
            str(self.upload.pk),
        ]


@pytest.fixture
def victim(db, tmp_storage, api_client_for, clear_cache):
    account = make_account("pro", "Victim Holdings")
    app = App.objects.create(
        account=account,
        slug="victim-app",
        name="Victim App",
        platforms=["android"],
        runtime_version="1.0.0",
    )
    build, bundle, _ = finished_ota_build(app, "android", tmp_path=tmp_storage)
    version = releases.create_version(app, [build.pk])
    signing.generate_key(app)  # its code signing key: the intruder must not reach it
    queued_job = Job.objects.create(
        kind="diagnostic.sleep",
        account=account,
        priority_class="P1",
        status=JobStatus.QUEUED,
        params={"seconds": 1},
        timeout_seconds=60,
        not_before=timezone.now() + dt.timedelta(days=1),
    )
    build_run = BuildRun.objects.create(
        run_id=uuid.uuid4(), account=account, command="npm run build", started_at=timezone.now()
    )
    upload = SourceUpload.objects.create(  # a direct upload not completed yet
        account=account,
        app=app,
        storage_key=f"sources/{account.slug}/{app.slug}/victim.tar.gz",
        size=1024,
        sha256="",
        state=SourceState.PENDING,
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )
    client = api_client_for(account)
    return Victim(account, client, app, version, build, bundle, queued_job, build_run, upload)


@pytest.fixture
def intruder(db, api_client_for):
    """Another account's client whose token has every scope."""
    return api_client_for(make_account("enterprise", "Intruder Inc"))
