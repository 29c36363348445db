"""Releases a device can receive: each build records its runtime version (app.json's, else
the app's), a version takes its builds', and nothing without one can be published."""

import json

import pytest

from buildhub.errors import ServiceError
from builds.choices import JobStatus
from builds.engine.exceptions import JobFailed
from builds.engine.runner import run_next_job
from builds.models import Job
from publishing import releases, runtime
from publishing.models import App
from tests.publishing.ota_helpers import copy_fixture, make_app, request_ota, upload_source
from tests.support.publishing import finished_ota_build


def app_json(tmp_path, expo: dict, platform="android") -> str:
    (tmp_path / "app.json").write_text(json.dumps({"expo": expo}))
    return runtime.from_app_json(tmp_path, platform)


def test_a_runtime_version_string_or_policy_in_app_json_is_followed(tmp_path):
    assert app_json(tmp_path, {"runtimeVersion": "2.4.0"}) == "2.4.0"
    assert app_json(tmp_path, {"version": "3.1.0", "runtimeVersion": {"policy": "appVersion"}}) == (
        "3.1.0"
    )
    native = {
        "version": "3.1.0",
        "runtimeVersion": {"policy": "nativeVersion"},
        "ios": {"buildNumber": "41"},
        "android": {"versionCode": 7},
    }
    assert app_json(tmp_path, native, "ios") == "3.1.0(41)"
    assert app_json(tmp_path, native, "android") == "3.1.0(7)"
    assert app_json(
        tmp_path, {"sdkVersion": "52.0.0", "runtimeVersion": {"policy": "sdkVersion"}}
    ) == ("exposdk:52.0.0")
    per_platform = {"runtimeVersion": "1.0", "ios": {"runtimeVersion": "1.0-ios"}}
    assert app_json(tmp_path, per_platform, "ios") == "1.0-ios"
    assert app_json(tmp_path, per_platform, "android") == "1.0"
    # A fingerprint cannot be computed from JavaScript: the app's own setting is used.
    assert app_json(tmp_path, {"runtimeVersion": {"policy": "fingerprint"}}) == ""
    assert app_json(tmp_path, {"name": "no runtime version"}) == ""
    assert runtime.from_app_json(tmp_path / "nothing-here", "ios") == ""


@pytest.mark.parametrize(
    ("expo", "message"),
    [
        ({"runtimeVersion": {"policy": "appVersion"}}, "policy appVersion needs expo.version"),
        ({"runtimeVersion": "has spaces"}, "is not 1 to 64 printable characters"),
        ({"runtimeVersion": 3}, "must be a string or"),
    ],
)
def test_a_runtime_version_app_json_cannot_give_fails_the_build_saying_why(tmp_path, expo, message):
    with pytest.raises(JobFailed, match=message):
        app_json(tmp_path, expo)


@pytest.mark.django_db
def test_a_version_takes_its_builds_runtime_version_and_refuses_none_or_two(
    pro_account, tmp_storage
):
    app = App.objects.create(account=pro_account, slug="bare", name="Bare", platforms=["ios"])
    android, _, _ = finished_ota_build(app, "android", tmp_path=tmp_storage)
    ios, _, _ = finished_ota_build(app, "ios", b"\xc6\x1f\xbc\x03ios", tmp_path=tmp_storage)

    with pytest.raises(ServiceError, match="No device could receive this version"):
        releases.create_version(app, [android.pk])

    Job.objects.filter(pk=android.pk).update(result={"runtime_version": "2.0"})
    Job.objects.filter(pk=ios.pk).update(result={"runtime_version": "2.1"})
    with pytest.raises(ServiceError, match=r"different runtime versions: 2.0 \(android\), 2.1"):
        releases.create_version(app, [android.pk, ios.pk])

    Job.objects.filter(pk=ios.pk).update(result={"runtime_version": "2.0"})
    version = releases.create_version(app, [android.pk, ios.pk])
    assert version.runtime_version == "2.0"


@pytest.mark.django_db
def test_a_version_without_a_runtime_version_cannot_be_published(app):
    version = app.versions.create(number=1, status="ready", runtime_version="")

    with pytest.raises(ServiceError, match="no device could receive it"):
        releases.request_publish(version, "production")


@pytest.mark.django_db(transaction=True)
def test_a_build_records_the_runtime_version_of_its_app_json(pro_account, tmp_storage, tmp_path):
    source = copy_fixture(tmp_path)
    (source / "app.json").write_text(
        json.dumps({"expo": {"version": "4.2.0", "runtimeVersion": {"policy": "appVersion"}}})
    )
    app = make_app(pro_account)  # its own runtime version is "1": app.json's wins
    job = request_ota(app, upload_source(app, source))

    assert run_next_job() == str(job.pk)

    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["runtime_version"] == "4.2.0"
    assert releases.create_version(app, [job.pk]).runtime_version == "4.2.0"
