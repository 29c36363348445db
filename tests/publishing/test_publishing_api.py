import datetime as dt
import json

import pytest
from django.core import signing
from django.core.files.storage import storages
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from builds.choices import JobStatus
from builds.engine.runner import run_next_job
from builds.models import Job
from publishing import artifacts, releases
from publishing.choices import VersionStatus
from publishing.models import App, Artifact, Device, Release, Version
from tests.builds.engine_helpers import held_lease
from tests.support.accounts import make_account
from tests.support.api import assert_error
from tests.support.publishing import finished_ota_build
from tests.support.s3 import RUN_ON_S3


@pytest.fixture
def client_for(api_client_for):
    return api_client_for


# --- apps --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_apps_are_created_and_listed_for_the_tokens_account(pro_account, client_for):
    client = client_for(pro_account)

    created = client.post(
        "/api/v1/apps/",
        {"slug": "shop", "name": "Shop", "platforms": ["ios", "android"], "runtime_version": "1.0"},
        format="json",
    )

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["platforms"] == ["android", "ios"]
    assert body["app_key"].startswith("app_")
    assert client.get("/api/v1/apps/").json()["results"][0]["slug"] == "shop"
    patched = client.patch("/api/v1/apps/shop/", {"name": "Shop 2"}, format="json")
    assert patched.json()["name"] == "Shop 2"


@pytest.mark.django_db
def test_app_validation_and_isolation(pro_account, free_account, client_for, app):
    client = client_for(pro_account)
    duplicate = client.post(
        "/api/v1/apps/", {"slug": "shop", "name": "x", "platforms": ["android"]}, format="json"
    )
    error = assert_error(duplicate, 400, "invalid")
    assert "slug" in error["fields"]
    bad_platform = client.post(
        "/api/v1/apps/", {"slug": "b", "name": "x", "platforms": ["windows"]}, format="json"
    )
    assert "platforms" in assert_error(bad_platform, 400, "invalid")["fields"]

    assert_error(client_for(free_account).get("/api/v1/apps/shop/"), 404, "not_found")
    assert_error(
        client_for(pro_account, scopes=["events:write"]).get("/api/v1/apps/"),
        403,
        "permission_denied",
    )


# --- versions and publish ----------------------------------------------------------------
@pytest.mark.django_db
def test_a_version_is_made_from_succeeded_ota_builds(pro_account, client_for, app, tmp_storage):
    android, _, _ = finished_ota_build(app, "android", tmp_path=tmp_storage)
    ios, _, _ = finished_ota_build(app, "ios", b"\xc6\x1f\xbc\x03ios", tmp_path=tmp_storage)
    client = client_for(pro_account)

    response = client.post(
        "/api/v1/apps/shop/versions/", {"build": [str(android.pk), str(ios.pk)]}, format="json"
    )

    assert response.status_code == 201, response.content
    version = response.json()
    assert version["number"] == 1
    assert version["status"] == "ready"
    assert sorted(a["platform"] for a in version["assets"]) == ["android", "ios"]
    assert all(a["kind"] == "ota_bundle" for a in version["assets"])
    listed = client.get("/api/v1/apps/shop/versions/").json()["results"]
    assert [v["number"] for v in listed] == [1]


@pytest.mark.django_db
def test_versions_refuse_unfinished_or_foreign_builds(pro_account, client_for, app, tmp_storage):
    job, _, _ = finished_ota_build(app, tmp_path=tmp_storage)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, **held_lease())
    client = client_for(pro_account, scopes=["publish"])

    not_done = client.post("/api/v1/apps/shop/versions/", {"build": str(job.pk)}, format="json")
    assert "has not succeeded" in assert_error(not_done, 400, "invalid")["message"]
    unknown = client.post(
        "/api/v1/apps/shop/versions/",
        {"build": "00000000-0000-0000-0000-000000000000"},
        format="json",
    )
    assert_error(unknown, 400, "invalid")
    assert not Version.objects.exists()


def publish(client, number=1, env="production"):
    return client.post(
        f"/api/v1/apps/shop/versions/{number}/publish/",
        {"target_environment": env},
        format="json",
    )


@pytest.mark.django_db(transaction=True)
def test_publish_job_writes_release_json_and_devices_get_the_update(
    pro_account, client_for, app, tmp_storage
):
    android, bundle, _ = finished_ota_build(app, "android", tmp_path=tmp_storage)
    version = releases.create_version(app, [android.pk])
    client = client_for(pro_account, scopes=["publish", "builds:read"])

    response = publish(client)

    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert Version.objects.get(pk=version.pk).status == VersionStatus.PUBLISHING
    assert run_next_job() == job_id
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["asset_count"] == 1
    stages = list(job.logs.values_list("message", flat=True))
    assert any("release.json: version 1" in line for line in stages)
    with storages["default"].open(f"production/{pro_account.slug}/shop/release.json") as stored:
        manifest = json.loads(stored.read())
    assert manifest["version"] == 1
    assert manifest["runtime_version"] == "1.0.0"
    assert manifest["bundles"]["android"]["sha256"] == bundle.sha256
    assert Version.objects.get(pk=version.pk).status == VersionStatus.PUBLISHED

    device = Client(HTTP_X_APP_KEY=app.app_key)
    query = "app=shop&platform=android&runtime_version=1.0.0&channel=production"
    update = device.get(f"/api/v1/updates/check?{query}")
    assert update.status_code == 200
    assert update.json()["sha256"] == bundle.sha256
    assert update.json()["size"] == bundle.size
    downloaded = device.get(update.json()["bundle_url"])
    assert b"".join(downloaded.streaming_content) == b"\xc6\x1f\xbc\x03bundle"
    current = device.get(f"/api/v1/updates/check?{query}&current={bundle.sha256}")
    assert current.status_code == 204
    other_runtime = device.get("/api/v1/updates/check?app=shop&platform=android&runtime_version=2")
    assert other_runtime.status_code == 204


@pytest.mark.django_db(transaction=True)
def test_a_failed_publish_keeps_the_previous_release(pro_account, client_for, app, tmp_storage):
    first, _, _ = finished_ota_build(app, tmp_path=tmp_storage)
    releases.create_version(app, [first.pk])
    client = client_for(pro_account, scopes=["publish"])
    publish(client)
    run_next_job()
    key = f"production/{pro_account.slug}/shop/release.json"
    with storages["default"].open(key) as stored:
        before = stored.read()

    second, broken_bundle, _ = finished_ota_build(
        app, content=b"\xc6\x1f\xbc\x03v2", tmp_path=tmp_storage
    )
    version2 = releases.create_version(app, [second.pk])
    Artifact.objects.filter(pk=broken_bundle.pk).update(sha256="0" * 64)  # storage disagrees
    publish(client, number=2)
    run_next_job()

    failed = Job.objects.filter(kind="publish").order_by("-created_at").first()
    assert failed.status == JobStatus.FAILED
    assert "does not match its sha256" in failed.error
    assert Version.objects.get(pk=version2.pk).status == VersionStatus.READY
    with storages["default"].open(key) as stored:
        assert stored.read() == before
    assert Release.objects.filter(app=app).count() == 1


@pytest.mark.django_db
def test_publishing_needs_the_publish_scope_and_a_ready_version(pro_account, client_for, app):
    Version.objects.create(app=app, number=1, status=VersionStatus.DRAFT)

    assert_error(publish(client_for(pro_account, scopes=["builds:read"])), 403, "permission_denied")
    refused = publish(client_for(pro_account, scopes=["publish"]))
    assert_error(refused, 409, "conflict")
    bad_env = client_for(pro_account, scopes=["publish"]).post(
        "/api/v1/apps/shop/versions/1/publish/", {"target_environment": "moon"}, format="json"
    )
    assert "target_environment" in assert_error(bad_env, 400, "invalid")["fields"]


@pytest.mark.django_db(transaction=True)
def test_rollback_returns_devices_to_the_previous_release(
    pro_account, client_for, app, tmp_storage
):
    client = client_for(pro_account, scopes=["publish"])
    shas = []
    for number, content in ((1, b"\xc6\x1f\xbc\x03one"), (2, b"\xc6\x1f\xbc\x03two")):
        job, bundle, _ = finished_ota_build(app, content=content, tmp_path=tmp_storage)
        releases.create_version(app, [job.pk])
        publish(client, number=number)
        run_next_job()
        shas.append(bundle.sha256)
    device = Client(HTTP_X_APP_KEY=app.app_key)
    query = "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0"
    assert device.get(query).json()["sha256"] == shas[1]

    response = client.post("/api/v1/apps/shop/releases/production/rollback/")

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    assert device.get(query).json()["sha256"] == shas[0]
    again = client.post("/api/v1/apps/shop/releases/production/rollback/")
    assert_error(again, 409, "conflict")


# --- update check details ----------------------------------------------------------------
@pytest.mark.django_db
def test_update_check_validates_and_needs_the_app_key(app):
    device = Client()
    missing_key = device.get("/api/v1/updates/check?app=shop&platform=android&runtime_version=1")
    assert_error(missing_key, 401, "not_authenticated")
    wrong_app = Client(HTTP_X_APP_KEY=app.app_key).get(
        "/api/v1/updates/check?app=other&platform=android&runtime_version=1"
    )
    assert_error(wrong_app, 401, "not_authenticated")
    bad = Client(HTTP_X_APP_KEY=app.app_key).get(
        "/api/v1/updates/check?app=shop&platform=symbian&current=xyz"
    )
    error = assert_error(bad, 400, "invalid")
    assert {"platform", "runtime_version", "current"} <= set(error["fields"])


def test_rollout_is_deterministic_per_device():
    chosen = [releases.in_rollout(7, f"device-{n}", 30) for n in range(2000)]
    again = [releases.in_rollout(7, f"device-{n}", 30) for n in range(2000)]

    assert chosen == again
    assert 0.25 < sum(chosen) / len(chosen) < 0.35
    assert all(releases.in_rollout(7, f"device-{n}", 100) for n in range(50))
    assert not any(releases.in_rollout(7, f"device-{n}", 0) for n in range(50))


@pytest.mark.django_db
def test_update_check_query_count_when_cached(app, django_assert_max_num_queries):
    device = Client(HTTP_X_APP_KEY=app.app_key)
    query = "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0"
    device.get(query)  # warms the release cache

    with django_assert_max_num_queries(1):  # the app by its key; the release from Redis
        assert device.get(query).status_code == 204


# --- devices -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_device_registration_is_idempotent(app):
    device = Client(HTTP_X_APP_KEY=app.app_key)
    body = {"device_id": "d-1", "platform": "ios", "runtime_version": "1.0.0"}

    first = device.post("/api/v1/devices/register", body, content_type="application/json")
    again = device.post(
        "/api/v1/devices/register",
        {**body, "runtime_version": "1.1.0"},
        content_type="application/json",
    )

    assert first.status_code == 201
    assert again.status_code == 200
    assert Device.objects.get().runtime_version == "1.1.0"
    bad = device.post(
        "/api/v1/devices/register", {"device_id": ""}, content_type="application/json"
    )
    assert {"device_id", "platform"} <= set(assert_error(bad, 400, "invalid")["fields"])


# --- artifacts ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.skipif(RUN_ON_S3, reason="filesystem links; tests/storage tests S3's")
def test_sourcemaps_download_only_for_their_owner_with_an_expiring_link(
    pro_account, client_for, app, tmp_storage, settings
):
    _, _, sourcemap = finished_ota_build(app, tmp_path=tmp_storage)
    owner = client_for(pro_account)

    redirect = owner.get(f"/api/v1/artifacts/{sourcemap.pk}/download/")

    assert redirect.status_code == 302
    link = redirect["Location"]
    assert "token=" in link
    downloaded = APIClient().get(link)
    assert downloaded.status_code == 200
    assert b'"sources": ["App.js"]' in b"".join(downloaded.streaming_content)
    stranger = client_for(make_account("pro", "Stranger"))
    assert_error(stranger.get(f"/api/v1/artifacts/{sourcemap.pk}/download/"), 404, "not_found")
    forged = link.split("token=")[0] + "token=" + signing.dumps("other", salt="x")
    assert_error(APIClient().get(forged), 403, "link_invalid")
    settings.SIGNED_URL_SECONDS = -1
    assert_error(APIClient().get(link), 403, "link_expired")


@pytest.mark.django_db
def test_expired_artifacts_are_gone_and_swept(pro_account, client_for, app, tmp_storage):
    _, bundle, sourcemap = finished_ota_build(app, tmp_path=tmp_storage)
    Artifact.objects.filter(pk=sourcemap.pk).update(expires_at=timezone.now() - dt.timedelta(1))

    assert_error(
        client_for(pro_account).get(f"/api/v1/artifacts/{sourcemap.pk}/download/"), 410, "gone"
    )
    assert artifacts.sweep_expired_artifacts() == 1
    assert not storages["private"].exists(sourcemap.storage_key)
    assert storages["default"].exists(bundle.storage_key)


@pytest.mark.django_db
def test_the_sweeper_keeps_files_a_live_release_needs(app, tmp_storage):
    job, bundle, _ = finished_ota_build(app, tmp_path=tmp_storage)
    version = releases.create_version(app, [job.pk])
    Release.objects.create(app=app, env="production", version=version, manifest_key="k")
    Artifact.objects.update(expires_at=timezone.now() - dt.timedelta(days=1))

    assert artifacts.sweep_expired_artifacts() == 1  # the sourcemap only
    assert storages["default"].exists(bundle.storage_key)


def test_app_keys_are_unique_and_random():
    from publishing.models import new_app_key

    keys = {new_app_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("app_") and len(key) >= 24 for key in keys)


@pytest.mark.django_db
def test_app_model_is_scoped_by_account(pro_account):
    other = make_account("free", "Other")
    App.objects.create(account=pro_account, slug="same", name="A", platforms=["ios"])
    App.objects.create(account=other, slug="same", name="B", platforms=["ios"])
    assert App.objects.filter(slug="same").count() == 2


@pytest.mark.django_db
def test_the_supervisor_sweeps_expired_artifacts(app, tmp_storage):
    from builds import registry
    from builds.management.commands.runworkers import Supervisor

    _, bundle, sourcemap = finished_ota_build(app, tmp_path=tmp_storage)
    Artifact.objects.filter(pk=sourcemap.pk).update(expires_at=timezone.now() - dt.timedelta(1))
    names = [task.name for task in registry.periodic_tasks()]
    assert "sweep expired artifacts" in names and "sweep expired sources" in names

    Supervisor(clusters=0, idle_seconds=1, out=lambda line: None).sweep()

    assert not storages["private"].exists(sourcemap.storage_key)
    assert Artifact.objects.get(pk=sourcemap.pk).deleted_at is not None
    assert storages["default"].exists(bundle.storage_key)
