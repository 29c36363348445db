"""The CodePush-compatible API: deployment keys, the update check, packages and reports.
tests/publishing/test_codepush_client.py drives the same through the real `code-push` SDK."""

import hashlib
import io
import json
import zipfile

import pytest
from django.test import Client

from builds.engine.runner import run_next_job
from publishing import releases, semver
from publishing.models import Artifact, Release, UpdateReport
from tests.support.api import assert_error
from tests.support.codepush import BUNDLE, BUNDLE_2, key_of, publish
from tests.support.publishing import finished_ota_build

pytestmark = pytest.mark.django_db(transaction=True)


# --- binary version ranges ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "binary_range", "expected"),
    [
        ("1.0.0", "*", True),
        ("1.0", "1.0.0", True),
        ("1.0.1", "1.0.0", False),
        ("1.2.9", "1.2.x", True),
        ("1.3.0", "1.2.x", False),
        ("1.9.0", "1.x", True),
        ("1.9.0", "~1.2.3", False),
        ("1.2.7", "~1.2.3", True),
        ("1.9.0", "^1.2.3", True),
        ("2.0.0", "^1.2.3", False),
        ("0.2.9", "^0.2.3", True),
        ("0.3.0", "^0.2.3", False),
        ("1.5.0", ">=1.0.0 <2.0.0", True),
        ("2.0.0", ">=1.0.0 <2.0.0", False),
        ("1.4.2", "1.0.0 - 1.4", True),
        ("1.5.0", "1.0.0 - 1.4", False),
        ("3.1.0", "1.x || >=3.0.0", True),
        ("2.1.0", "1.x || >=3.0.0", False),
    ],
)
def test_binary_ranges_read_as_npm_semver_reads_them(version, binary_range, expected):
    assert semver.satisfies(semver.parse_version(version), binary_range) is expected


def test_a_range_or_version_it_cannot_read_is_refused():
    for bad in ("", "banana", ">=one", "1.2.3.4"):
        with pytest.raises(semver.RangeError):
            semver.parse_range(bad)
    assert semver.parse_version("not a version") is None
    assert semver.older_than_range((1, 0, 0), ">=2.0.0")
    assert not semver.older_than_range((3, 0, 0), ">=2.0.0")


# --- the API ----------------------------------------------------------------------------------
def check(key, app_version="1.0.0", **more) -> dict:
    response = Client().get(
        "/v0.1/public/codepush/update_check",
        {"deployment_key": key, "app_version": app_version, **more},
    )
    assert response.status_code == 200
    return response.json()["update_info"]


def package_hash_of(zip_bytes: bytes) -> str:
    """The package hash as the CodePush tools compute it from the package's files."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        entries = sorted(
            f"{info.filename}:{hashlib.sha256(archive.read(info)).hexdigest()}"
            for info in archive.infolist()
            if not info.is_dir()
        )
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def test_deployment_keys_are_listed_per_environment_and_platform_and_rotate(
    pro_account, api_client_for, app, tmp_storage
):
    client = api_client_for(pro_account)
    publish(app, tmp_storage)

    listed = client.get(f"/api/v1/apps/{app.slug}/deployments/").json()["results"]
    old = next(d["key"] for d in listed if d["env"] == "production" and d["platform"] == "android")
    rotated = client.post(f"/api/v1/apps/{app.slug}/deployments/production/android/rotate/")
    new = rotated.json()["key"]

    assert {(d["env"], d["platform"]) for d in listed} == {
        (env, platform) for env in ("dev", "staging", "production") for platform in app.platforms
    }
    assert rotated.status_code == 200 and new != old and rotated.json()["rotated_at"]
    assert check(old)["is_available"] is False  # the old key names nothing any more
    assert check(new)["is_available"] is True
    assert_error(
        client.post(f"/api/v1/apps/{app.slug}/deployments/production/windows/rotate/"),
        404,
        "not_found",
    )


def test_an_update_names_a_zip_whose_package_hash_is_codepushs(app, tmp_storage):
    publish(app, tmp_storage, target_binary_range="1.x")

    info = check(key_of(app), "1.4.0", client_unique_id="device-1")
    package = Client().get(info["download_url"])

    assert info["is_available"] is True and info["is_mandatory"] is False
    assert info["label"] == "v1" and info["target_binary_range"] == "1.x"
    assert info["update_app_version"] is False and info["should_run_binary_version"] is False
    assert package.status_code == 200 and package["content-type"] == "application/zip"
    assert package["cache-control"] == "public, max-age=31536000, immutable"
    body = b"".join(package.streaming_content)
    assert info["package_size"] == len(body)
    assert info["package_hash"] == package_hash_of(body)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["CodePush/index.android.bundle"]
        assert archive.read("CodePush/index.android.bundle") == BUNDLE
    # Up to date: the device reports the package it runs.
    assert check(key_of(app), "1.4.0", package_hash=info["package_hash"])["is_available"] is False


def test_binaries_outside_the_range_get_no_update_or_are_told_to_update_the_app(app, tmp_storage):
    publish(app, tmp_storage, target_binary_range=">=2.0.0")

    older = check(key_of(app), "1.9.0")
    newer_than_any = check(key_of(app), "1.0", is_companion="true")

    assert older["is_available"] is False and older["update_app_version"] is True
    assert older["target_binary_range"] == ">=2.0.0"
    assert newer_than_any["is_available"] is True  # a companion app ignores the binary version


def test_a_mandatory_release_between_the_devices_and_the_latest_makes_it_mandatory(
    app, tmp_storage
):
    publish(app, tmp_storage, BUNDLE, mandatory=True)
    publish(app, tmp_storage, BUNDLE_2)

    on_v1 = check(key_of(app), label="v1", package_hash="x")
    on_binary = check(key_of(app))

    assert on_v1["label"] == "v2" and on_v1["is_mandatory"] is False
    assert on_binary["is_mandatory"] is True  # v1, which it never installed, was mandatory


def test_rollouts_are_sticky_per_client_and_rollback_serves_the_earlier_package(app, tmp_storage):
    publish(app, tmp_storage, BUNDLE)
    first = check(key_of(app))
    publish(app, tmp_storage, BUNDLE_2, rollout_percent=40)
    clients = [f"client-{n}" for n in range(200)]

    offered = {c for c in clients if check(key_of(app), client_unique_id=c)["is_available"]}
    again = {c for c in clients if check(key_of(app), client_unique_id=c)["is_available"]}
    releases.rollback(app, "production")
    back = check(key_of(app), client_unique_id="client-1")

    assert offered == again and 40 <= len(offered) <= 120
    assert back["label"] == "v1" and back["download_url"] == first["download_url"]
    assert back["package_hash"] == first["package_hash"]


def test_bad_or_unknown_checks_are_still_200_and_offer_nothing(app, tmp_storage):
    publish(app, tmp_storage)

    for query in (
        {"deployment_key": "dk_unknown", "app_version": "1.0.0"},
        {"deployment_key": key_of(app), "app_version": "not-a-version"},
        {},
    ):
        response = Client().get("/v0.1/public/codepush/update_check", query)
        assert response.status_code == 200
        assert response.json()["update_info"]["is_available"] is False


def test_no_release_tells_a_device_on_an_update_to_run_its_binary(app):
    assert check(key_of(app), label="v3", package_hash="abc")["should_run_binary_version"] is True
    assert check(key_of(app))["should_run_binary_version"] is False


def test_reports_are_recorded_per_release_label(app, tmp_storage):
    publish(app, tmp_storage)
    key = key_of(app)
    post = Client().post

    download = post(
        "/v0.1/public/codepush/report_status/download",
        {"deployment_key": key, "label": "v1", "client_unique_id": "d1"},
        content_type="application/json",
    )
    failed = post(
        "/v0.1/public/codepush/report_status/deploy",
        {"deployment_key": key, "label": "v1", "status": "DeploymentFailed", "app_version": "1.0"},
        content_type="application/json",
    )
    garbage = post("/v0.1/public/codepush/report_status/deploy", "{not json", content_type="x/y")

    assert download.status_code == failed.status_code == garbage.status_code == 200
    reports = list(UpdateReport.objects.order_by("created_at").values_list("kind", "status"))
    assert reports == [("download", ""), ("deploy", "DeploymentFailed")]


def test_the_legacy_update_check_speaks_camel_case(app, tmp_storage):
    publish(app, tmp_storage)

    response = Client().get(
        "/updateCheck", {"deploymentKey": key_of(app), "appVersion": "1.0.0", "clientUniqueId": "x"}
    )
    reported = Client().post(
        "/reportStatus/deploy",
        {"deploymentKey": key_of(app), "label": "v1", "status": "DeploymentSucceeded"},
        content_type="application/json",
    )

    info = response.json()["updateInfo"]
    assert info["isAvailable"] is True and info["downloadURL"].startswith("http")
    assert info["label"] == "v1" and info["appVersion"] == "*"
    assert reported.status_code == 200
    assert UpdateReport.objects.get().status == "DeploymentSucceeded"


def test_a_publish_refuses_a_range_it_cannot_read(pro_account, api_client_for, app, tmp_storage):
    job, _, _ = finished_ota_build(app, "android", tmp_path=tmp_storage)
    releases.create_version(app, [job.pk])

    refused = api_client_for(pro_account).post(
        f"/api/v1/apps/{app.slug}/versions/1/publish/",
        {"target_binary_range": "banana"},
        format="json",
    )

    assert "target_binary_range" in assert_error(refused, 400, "invalid")["fields"]


def test_the_package_is_made_once_per_version_and_kept_with_it(app, tmp_storage):
    version = publish(app, tmp_storage)
    publish_job, _ = releases.request_publish(version, "staging")
    run_next_job()

    packages = Artifact.objects.filter(kind="codepush_package")
    assert packages.count() == 1
    assert version.assets.filter(kind="codepush_package").count() == 1
    staging = Release.objects.get(env="staging").manifest["bundles"]["android"]["codepush"]
    assert staging["artifact"] == str(packages.get().pk)


def test_a_version_of_both_platforms_gets_a_package_for_each(app, tmp_storage):
    android, _, _ = finished_ota_build(app, "android", content=BUNDLE, tmp_path=tmp_storage)
    ios, _, _ = finished_ota_build(app, "ios", content=BUNDLE_2, tmp_path=tmp_storage)
    version = releases.create_version(app, [android.pk, ios.pk])
    publish_job, _ = releases.request_publish(version, "production")
    assert run_next_job() == str(publish_job.pk)

    bundles = Release.objects.get().manifest["bundles"]
    ios_key = key_of(app, platform="ios")
    ios_info = check(ios_key)
    ios_zip = b"".join(Client().get(ios_info["download_url"]).streaming_content)

    assert set(bundles) == {"android", "ios"}
    assert bundles["android"]["codepush"]["artifact"] != bundles["ios"]["codepush"]["artifact"]
    with zipfile.ZipFile(io.BytesIO(ios_zip)) as archive:
        assert archive.read("CodePush/main.jsbundle") == BUNDLE_2
