"""A rollback changes the release rows under lock and writes release.json only once that has
committed; when storage fails then, the rollback is undone and the caller hears 503."""

import json

import pytest
from django.core.files.storage import storages
from django.db import connection

from buildhub.errors import ServiceError
from publishing import health, releases
from publishing.choices import FailureAction, VersionStatus
from publishing.models import Release, Version

pytestmark = pytest.mark.django_db(transaction=True)

ROLLBACK_URL = "/api/v1/apps/shop/releases/production/rollback/"


@pytest.fixture
def two_releases(app, tmp_storage):
    """v1 then v2 published to production (v2 live), each with its release.json."""
    for number in (1, 2):
        version = Version.objects.create(
            app=app, number=number, status=VersionStatus.PUBLISHED, runtime_version="1.0.0"
        )
        key = releases.manifest_key("production", app)
        manifest = {"app": app.slug, "version": number, "bundles": {}}
        Release.objects.create(
            app=app, env="production", version=version, manifest_key=key, manifest=manifest
        )
        releases.write_atomically(key, json.dumps(manifest).encode())
    return key


def stored_version(key) -> int:
    with storages["default"].open(key) as stored:
        return json.loads(stored.read())["version"]


def live_version(app) -> int:
    releases.invalidate_update_cache(app, "production")
    return releases.current_release(app, "production")["manifest"]["version"]


def test_release_json_is_written_after_the_rollback_commits(
    app, two_releases, api_client_for, monkeypatch
):
    writes = []
    write = releases.write_atomically

    def watched(key, body):
        writes.append(connection.in_atomic_block)
        return write(key, body)

    monkeypatch.setattr(releases, "write_atomically", watched)

    response = api_client_for(app.account, scopes=["publish"]).post(ROLLBACK_URL)

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    assert writes == [False]  # no transaction (and so no row lock) held while writing
    assert stored_version(two_releases) == 1
    assert live_version(app) == 1


def test_a_failed_write_undoes_the_rollback(app, two_releases, api_client_for, monkeypatch):
    client = api_client_for(app.account, scopes=["publish"])

    def unavailable(key, body):
        raise OSError("No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(releases, "write_atomically", unavailable)
        refused = client.post(ROLLBACK_URL)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert live_version(app) == 2  # devices still get v2, as release.json says
    assert stored_version(two_releases) == 2
    assert not Release.objects.filter(rolled_back_at__isnull=False).exists()

    again = client.post(ROLLBACK_URL)  # once storage is back, the same request succeeds

    assert again.status_code == 200
    assert (again.json()["version"], stored_version(two_releases), live_version(app)) == (1, 1, 1)


def test_a_health_rollback_that_cannot_be_written_is_tried_again(app, two_releases, monkeypatch):
    app.failure_threshold_percent, app.failure_action = 20, FailureAction.ROLLBACK
    app.save()
    failing = Release.objects.get(version__number=2)

    def unavailable(key, body):
        raise OSError("No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(releases, "write_atomically", unavailable)
        with pytest.raises(ServiceError, match="Storage is unavailable"):
            health.act_on_failures(failing, 10, 5)

    failing.refresh_from_db()
    assert (failing.rolled_back_at, failing.health_action) == (None, "")
    assert live_version(app) == 2

    assert health.act_on_failures(failing, 10, 5)  # the next check-ins act again, and it holds

    failing.refresh_from_db()
    assert failing.health_action == FailureAction.ROLLBACK
    assert (stored_version(two_releases), live_version(app)) == (1, 1)
