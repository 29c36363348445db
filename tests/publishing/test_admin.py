"""Publishing's rows in the admin: every list opens for staff (pytest-django's
``admin_client``); what BuildHub writes is read-only, the app's settings are editable."""

import datetime as dt

import pytest
from django.utils import timezone

from publishing import codepush, secrets
from publishing.choices import (
    ArtifactKind,
    CheckinProtocol,
    DeviceOutcome,
    SourceState,
    VersionStatus,
)
from publishing.models import (
    App,
    Artifact,
    Device,
    DeviceCheckin,
    Release,
    ReleaseCheckinCount,
    ReleaseDevice,
    SourceUpload,
    UpdateReport,
    Version,
)

pytestmark = pytest.mark.django_db

READ_ONLY = [
    "version",
    "release",
    "artifact",
    "sourceupload",
    "device",
    "devicecheckin",
    "releasedevice",
    "releasecheckincount",
    "accountsecret",
    "deployment",
    "appsigningkey",
    "updatereport",
]


@pytest.fixture
def rows(app):
    """One row of each publishing table, as the services would leave them."""
    now = timezone.now()
    version = Version.objects.create(
        app=app, number=1, status=VersionStatus.PUBLISHED, runtime_version="1.0.0"
    )
    release = Release.objects.create(
        app=app, env="production", version=version, manifest_key="production/x/release.json"
    )
    Artifact.objects.create(
        account=app.account, app=app, kind=ArtifactKind.OTA_BUNDLE, platform="android", size=9
    )
    SourceUpload.objects.create(
        account=app.account,
        app=app,
        storage_key="sources/x.tar.gz",
        filename="x.tar.gz",
        size=10,
        sha256="0" * 64,
        state=SourceState.READY,
        expires_at=now + dt.timedelta(days=1),
    )
    Device.objects.create(app=app, device_id="device-1", platform="android")
    DeviceCheckin.objects.create(
        app=app,
        env="production",
        device_id="device-1",
        platform="android",
        protocol=CheckinProtocol.BUILDHUB,
        running_release=release,
        last_seen=now,
    )
    ReleaseDevice.objects.create(
        release=release, device_id="device-1", outcome=DeviceOutcome.INSTALLED, first_seen=now
    )
    ReleaseCheckinCount.objects.create(
        release=release, hour=now.replace(minute=0, second=0, microsecond=0), checks=3
    )
    UpdateReport.objects.create(app=app, env="production", platform="android", kind="deploy")
    codepush.deployments_of(app)
    secrets.set_secret(app.account, "EXPO_TOKEN", "expo-secret-value")
    return release


@pytest.mark.parametrize("model", [*READ_ONLY, "app"])
def test_each_publishing_list_opens_for_staff(admin_client, rows, model):
    response = admin_client.get(f"/admin/publishing/{model}/")

    assert response.status_code == 200
    assert "0 results" not in response.content.decode()


@pytest.mark.parametrize("model", READ_ONLY)
def test_what_publishing_writes_is_read_only(admin_client, rows, model):
    assert admin_client.get(f"/admin/publishing/{model}/add/").status_code == 403
    page = admin_client.get(f"/admin/publishing/{model}/").content.decode()
    assert f"/admin/publishing/{model}/add/" not in page


def test_a_release_page_shows_its_fields_without_a_save_button(admin_client, rows):
    page = admin_client.get(f"/admin/publishing/release/{rows.pk}/change/").content.decode()

    assert "production/x/release.json" in page
    assert 'name="_save"' not in page


def test_account_secrets_never_show_their_value(admin_client, rows):
    secret = rows.app.account.secrets.get()
    pages = admin_client.get("/admin/publishing/accountsecret/").content.decode()
    pages += admin_client.get(
        f"/admin/publishing/accountsecret/{secret.pk}/change/"
    ).content.decode()

    assert "EXPO_TOKEN" in pages
    assert "expo-secret-value" not in pages


def test_app_settings_are_editable(admin_client, app):
    response = admin_client.post(
        f"/admin/publishing/app/{app.pk}/change/",
        {
            "account": app.account.pk,
            "slug": app.slug,
            "name": "Shop Two",
            "platforms": '["android"]',
            "runtime_version": "2.0.0",
            "failure_threshold_percent": "25",
            "failure_action": "halt",
            "failure_min_devices": "20",
        },
    )

    assert response.status_code == 302
    app = App.objects.get(pk=app.pk)
    assert (app.name, app.runtime_version, app.failure_threshold_percent) == (
        "Shop Two",
        "2.0.0",
        25,
    )
