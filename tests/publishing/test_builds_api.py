"""POST/GET /api/v1/builds/: validation naming the field, idempotency, queue, artifacts."""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from builds import registry
from builds.choices import JobStatus, WorkerState
from builds.engine.runner import run_next_job
from builds.engine.submit import submit_job
from builds.models import Job, Worker
from publishing import sources
from publishing.models import App, SourceUpload
from tests.publishing.archives import tar_gz
from tests.support.api import assert_error

EXPO = {"app": "shop", "target": "expo", "platform": "android", "channel": "preview"}


@pytest.fixture
def client(pro_account, api_client_for):
    return api_client_for(pro_account, scopes=["builds:read", "builds:write"])


@pytest.fixture
def source(app, tmp_storage):
    data = tar_gz([("app.json", "file", b'{"expo": {"slug": "shop"}}')])
    return sources.save_upload(app.account, app, SimpleUploadedFile("s.tar.gz", data))


def post(client, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/builds/", body, format="json", **headers)


@pytest.mark.django_db
def test_a_build_is_queued_with_its_position_and_request(client, source, monkeypatch):
    seen = []
    monkeypatch.setattr(registry, "_submission_checks", [lambda **kw: seen.append(kw)])

    response = post(client, {**EXPO, "source": {"upload": str(source.pk)}, "timeout_minutes": 10})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["kind"] == "build.expo"
    assert body["queue_position"] == 1
    assert body["eta_seconds"] is None  # nothing of this kind has finished yet
    assert body["timeout_seconds"] == 600
    assert body["waiting_reason"]
    request = {
        "app": "shop",
        "target": "expo",
        "platform": "android",
        "stage": "build",
        "provider": "eas",
        "channel": "preview",
        "dry_run": False,
        "source": {"upload": str(source.pk)},
    }
    assert {name: body["params"][name] for name in request} == request
    assert body["artifacts"] == []
    assert seen[0]["request_meta"] == {"ip": "127.0.0.1", "app_name": "Shop"}

    second = post(client, {**EXPO, "dry_run": True}).json()
    assert second["queue_position"] == 2


@pytest.mark.django_db
def test_a_repeated_idempotency_key_answers_200_with_the_first_job(client, source):
    body = {**EXPO, "source": {"upload": str(source.pk)}}
    first = post(client, body, key="ci-run-42")
    again = post(client, body, key="ci-run-42")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_eta_follows_recent_run_times_of_the_kind(client, pro_account, source):
    now = timezone.now()
    Worker.objects.create(id="w1", host="test", pid=1, processes=1, state=WorkerState.IDLE)
    Job.objects.create(
        kind="build.expo",
        account=pro_account,
        priority_class="P1",
        status=JobStatus.SUCCEEDED,
        timeout_seconds=900,
        started_at=now - dt.timedelta(seconds=100),
        finished_at=now - dt.timedelta(seconds=10),
    )

    body = post(client, {**EXPO, "source": {"upload": str(source.pk)}}).json()

    assert body["queue_position"] == 1
    assert body["eta_seconds"] == 90  # one free slot: it starts now and runs the median time


OVER_LIMIT = {"timeout_minutes": 16}  # the Pro tier allows 15 without add-ons
INVALID = [
    ({"target": "flutter", "provider": "eas"}, "provider"),
    ({"target": "expo", "provider": "local"}, "provider"),
    ({"target": "ota", "provider": "ci"}, "provider"),
    ({"target": "ota", "stage": "submit"}, "stage"),
    ({"target": "flutterflow", "stage": "submit"}, "stage"),
    ({"target": "flutter", "provider": "local", "stage": "submit"}, "provider"),
    ({"target": "flutter", "platform": "ios", "provider": "local"}, "provider"),
    ({"target": "ota", "dry_run": True}, "dry_run"),
    ({"target": "ota", "dry_run": False}, "source"),
    ({"target": "expo", "dry_run": False}, "source"),
    ({"target": "flutter", "provider": "local", "dry_run": False}, "source"),
    ({"target": "tvos"}, "target"),
    ({"platform": "windows"}, "platform"),
    ({"channel": "beta"}, "channel"),
    ({"stage": "release"}, "stage"),
    ({"timeout_minutes": 0}, "timeout_minutes"),
    ({"source": {"upload": "not-a-uuid"}}, "source"),
    ({"source": {"git": "file:///etc"}}, "source"),
    ({"source": {"git": "https://github.com/a/b", "ref": "--upload-pack=x"}}, "source"),
    ({"source": {"path": "/srv/app"}}, "source"),
    ({"source": {"upload": "00000000-0000-0000-0000-000000000000"}}, "source"),
    ({"app": "nope"}, "app"),
    (OVER_LIMIT, "timeout_minutes"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), INVALID)
def test_invalid_requests_are_refused_naming_the_field(client, app, change, field):
    response = post(client, {**EXPO, "dry_run": True, **change})

    error = assert_error(response, 400, "timeout_limit" if change == OVER_LIMIT else "invalid")
    assert field in error["fields"], error
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_uploads_of_another_app_or_expired_are_refused(client, pro_account, app, source):
    other = App.objects.create(account=pro_account, slug="blog", name="Blog", platforms=[])
    refused = post(client, {**EXPO, "app": other.slug, "source": {"upload": str(source.pk)}})
    assert assert_error(refused, 400, "invalid")["fields"] == {"source": "unknown upload"}

    SourceUpload.objects.filter(pk=source.pk).update(expires_at=timezone.now())
    expired = post(client, {**EXPO, "source": {"upload": str(source.pk)}})
    assert assert_error(expired, 400, "invalid")["fields"] == {"source": "expired upload"}


@pytest.mark.django_db
def test_a_platform_the_app_lacks_is_refused(client, pro_account):
    App.objects.create(account=pro_account, slug="shop", name="Shop", platforms=["ios"])
    response = post(client, {**EXPO, "dry_run": True})
    assert "platform" in assert_error(response, 400, "invalid")["fields"]


@pytest.mark.django_db
def test_builds_need_scopes_and_are_scoped_to_the_account(
    pro_account, free_account, api_client_for, app, source
):
    reader = api_client_for(pro_account, scopes=["builds:read"])
    assert_error(post(reader, {**EXPO, "dry_run": True}), 403, "permission_denied")

    job = post(api_client_for(pro_account), {**EXPO, "dry_run": True}).json()
    submit_job(pro_account, "diagnostic.sleep", {"seconds": 0}, staff=True)  # not a build

    listed = reader.get("/api/v1/builds/").json()
    assert [row["id"] for row in listed["results"]] == [job["id"]]
    assert reader.get(f"/api/v1/builds/{job['id']}/").json()["id"] == job["id"]
    stranger = api_client_for(free_account)
    assert_error(stranger.get(f"/api/v1/builds/{job['id']}/"), 404, "not_found")
    assert stranger.get("/api/v1/builds/").json()["results"] == []


@pytest.mark.django_db(transaction=True)
def test_a_finished_build_lists_its_artifacts_with_download_links(
    pro_account, api_client_for, app, tmp_storage, settings, tmp_path
):
    settings.JOB_WORKSPACE_ROOT = str(tmp_path / "workspaces")
    client = api_client_for(pro_account)
    created = post(client, {**EXPO, "target": "flutterflow", "platform": "ios"}).json()
    assert run_next_job() == created["id"]

    body = client.get(f"/api/v1/builds/{created['id']}/").json()

    assert body["status"] == "succeeded" and body["progress"] == 100
    assert body["queue_position"] is None
    [artifact] = body["artifacts"]
    assert artifact["kind"] == "instructions" and artifact["simulated"] is False
    assert artifact["size"] > 0 and len(artifact["sha256"]) == 64
    assert artifact["expires_at"]
    assert artifact["download_url"] == (
        f"http://testserver/api/v1/artifacts/{artifact['id']}/download/"
    )
    redirect = client.get(artifact["download_url"])
    assert redirect.status_code == 302
    content = b"".join(client.get(redirect["Location"]).streaming_content)
    assert content.startswith(b"# Shop: FlutterFlow export and publish (ios, preview)")


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_for_any_number_of_builds(client, app):
    def list_queries(builds: int) -> int:
        for _ in range(builds):
            post(client, {**EXPO, "dry_run": True})
        with CaptureQueriesContext(connection) as queries:
            rows = client.get("/api/v1/builds/").json()["results"]
        assert sorted(row["queue_position"] for row in rows) == list(range(1, len(rows) + 1))
        return len(queries)

    assert list_queries(2) == list_queries(8)
