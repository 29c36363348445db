"""Device check-ins from the three update protocols, written in batches, and what they make
of releases: adoption, failure rate, and the failure threshold's halt or rollback."""

import math
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from builds.choices import MembershipRole
from builds.models import Membership
from publishing import checkins, codepush, expo, releases
from publishing.choices import FailureAction, VersionStatus
from publishing.models import (
    DeviceCheckin,
    Release,
    ReleaseCheckinCount,
    ReleaseDevice,
    Version,
)
from tests.support.api import assert_error

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_buffer():
    checkins.stop()
    checkins.discard()
    yield
    checkins.discard()


def sha(n: int) -> str:
    return f"{n:02d}" * 32


def package_hash(n: int) -> str:
    return f"{n + 50:02d}" * 32


def release(app, number: int, env="production", rollout_percent=100) -> Release:
    """A published release of version ``number`` for Android (as the publish job leaves it)."""
    version = Version.objects.create(
        app=app, number=number, status=VersionStatus.PUBLISHED, runtime_version="1.0.0"
    )
    bundle = {
        "artifact": str(uuid.uuid4()),
        "url": f"/bundles/v{number}.hbc",
        "sha256": sha(number),
        "size": 100 + number,
        "codepush": {
            "artifact": str(uuid.uuid4()),
            "package_hash": package_hash(number),
            "size": 200 + number,
        },
    }
    row = Release.objects.create(
        app=app,
        env=env,
        version=version,
        manifest_key=f"{env}/release.json",
        rollout_percent=rollout_percent,
        manifest={
            "app": app.slug,
            "version": number,
            "runtime_version": "1.0.0",
            "channel": "production",
            "env": env,
            "bundles": {"android": bundle},
            "assets": [],
            "published_at": f"2025-01-0{number}T00:00:00Z",
        },
    )
    releases.invalidate_update_cache(app, env)
    return row


def buildhub_check(app, device="", current=""):
    query = {"app": app.slug, "platform": "android", "runtime_version": "1.0.0"}
    query.update(
        {name: value for name, value in (("device", device), ("current", current)) if value}
    )
    response = Client().get("/api/v1/updates/check", query, HTTP_X_APP_KEY=app.app_key)
    assert response.status_code in (200, 204), response.content
    return response


def expo_check(app, **headers):
    sent = {
        "HTTP_EXPO_PROTOCOL_VERSION": "1",
        "HTTP_EXPO_PLATFORM": "android",
        "HTTP_EXPO_RUNTIME_VERSION": "1.0.0",
        "HTTP_EXPO_CHANNEL_NAME": "production",
        "HTTP_ACCEPT": "application/expo+json",
    }
    sent.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    response = Client().get(f"/api/v1/expo/{app.app_key}/manifest", **sent)
    assert response.status_code in (200, 204), response.content
    return response


def deployment_key(app) -> str:
    return next(
        d.key
        for d in codepush.deployments_of(app)
        if d.env == "production" and d.platform == "android"
    )


def codepush_check(key, **query) -> dict:
    response = Client().get(
        "/v0.1/public/codepush/update_check",
        {"deployment_key": key, "app_version": "1.0.0", **query},
    )
    assert response.status_code == 200
    return response.json()["update_info"]


def codepush_deploy_report(key, label, status, client_id):
    response = Client().post(
        "/v0.1/public/codepush/report_status/deploy",
        {
            "deployment_key": key,
            "app_version": "1.0.0",
            "label": label,
            "status": status,
            "client_unique_id": client_id,
        },
        content_type="application/json",
    )
    assert response.status_code == 200


def inserts(model, rows: int) -> int:
    """How many statements bulk_create makes for ``rows`` rows of ``model`` here."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    most = connection.ops.bulk_batch_size(fields, [None] * rows)
    return math.ceil(rows / min(checkins.WRITE_BATCH, most))


def devices(app) -> dict:
    return {
        row.device_id: (row.protocol, row.running_release_id, row.offered_release_id)
        for row in DeviceCheckin.objects.filter(app=app)
    }


def counts(release_row) -> tuple:
    rows = ReleaseCheckinCount.objects.filter(release=release_row)
    return tuple(
        sum(getattr(row, name) for row in rows)
        for name in ("checks", "offered", "failures", "successes")
    )


def tried(release_row) -> dict:
    rows = ReleaseDevice.objects.filter(release=release_row)
    return {
        outcome: sorted(r.device_id for r in rows if r.outcome == outcome)
        for outcome in ("installed", "failed")
    }


# --- recording -------------------------------------------------------------------------------
def test_buildhub_checks_record_what_each_device_runs_and_was_offered(app, clear_cache):
    v1, v2 = release(app, 1), release(app, 2)

    buildhub_check(app, device="on-v1", current=sha(1))  # offered v2
    buildhub_check(app, device="on-v2", current=sha(2))  # up to date
    buildhub_check(app, device="on-v2", current=sha(2))
    buildhub_check(app, current=sha(1))  # no device id: counted, not followed
    buildhub_check(app, device="embedded")  # its binary's bundle: offered v2
    assert not DeviceCheckin.objects.exists()  # nothing written on the request path

    assert checkins.flush() == 5

    assert devices(app) == {
        "on-v1": ("buildhub", v1.pk, v2.pk),
        "on-v2": ("buildhub", v2.pk, None),
        "embedded": ("buildhub", None, v2.pk),
    }
    assert counts(v1) == (2, 0, 0, 0)
    assert counts(v2) == (2, 3, 0, 0)
    assert tried(v2) == {"installed": ["on-v2"], "failed": []}


def test_a_warm_check_makes_no_query_and_a_burst_is_written_in_a_bounded_number(
    app, clear_cache, django_assert_max_num_queries
):
    release(app, 1)
    buildhub_check(app, device="warm-up")
    checkins.flush()

    with CaptureQueriesContext(connection) as on_request_path:
        for n in range(50):
            buildhub_check(app, device=f"device-{n}", current=sha(1))
    assert len(on_request_path) == 0

    # The app, the environments' newest releases, then one write per table (and BEGIN/COMMIT).
    with django_assert_max_num_queries(7):
        assert checkins.flush() == 50
    assert DeviceCheckin.objects.filter(app=app).count() == 51

    for n in range(2500):  # the ASGI edge's way in: the same functions, no view
        checkins.buildhub_check(app.pk, "production", "android", f"edge-{n}", sha(1), None)
    # The same four, the counters' one, and as many INSERTs per table as the database takes
    # (1,000 rows each on PostgreSQL, fewer on SQLite for its limit on parameters).
    most = 5 + inserts(DeviceCheckin, 2500) + inserts(ReleaseDevice, 2500)
    with django_assert_max_num_queries(most):
        assert checkins.flush() == 2500
    assert DeviceCheckin.objects.filter(app=app).count() == 2551


def test_expo_checks_map_manifest_ids_and_count_reported_failures(app, clear_cache):
    v1, v2 = release(app, 1), release(app, 2)
    v1_id, v2_id = expo.manifest_id(v1.pk, "android"), expo.manifest_id(v2.pk, "android")
    embedded = str(uuid.uuid4())

    first = expo_check(
        app,
        eas_client_id="fresh",
        expo_embedded_update_id=embedded,
        expo_current_update_id=embedded,
    )
    expo_check(app, eas_client_id="current", expo_current_update_id=v2_id)
    expo_check(
        app,
        eas_client_id="fell-back",
        expo_current_update_id=v1_id,
        expo_recent_failed_update_ids=f'"{v2_id}", "{uuid.uuid4()}"',
    )
    expo_check(
        app,
        eas_client_id="crashed",
        expo_current_update_id=v2_id,
        expo_fatal_error="TypeError: undefined is not a function",
    )
    expo_check(app, eas_client_id="garbled", expo_recent_failed_update_ids="(((not a list")
    checkins.flush()

    assert first.status_code == 200 and first.json()["id"] == v2_id
    assert devices(app) == {
        "fresh": ("expo", None, v2.pk),
        "current": ("expo", v2.pk, None),
        "fell-back": ("expo", v1.pk, v2.pk),
        "crashed": ("expo", v2.pk, None),
        "garbled": ("expo", None, v2.pk),
    }
    assert counts(v2) == (2, 3, 2, 0)
    assert tried(v2) == {"installed": ["crashed", "current"], "failed": ["crashed", "fell-back"]}
    assert tried(v1) == {"installed": ["fell-back"], "failed": []}


def test_codepush_checks_and_deploy_reports_count_per_release(app, clear_cache):
    v1, v2 = release(app, 1), release(app, 2)
    key = deployment_key(app)

    offered = codepush_check(key, label="v1", package_hash=package_hash(1), client_unique_id="a")
    codepush_check(key, package_hash=package_hash(2), client_unique_id="b")  # hash only
    codepush_check(key, client_unique_id="binary")
    codepush_deploy_report(key, "v2", "DeploymentFailed", "a")
    codepush_deploy_report(key, "v2", "DeploymentSucceeded", "c")
    codepush_deploy_report(key, "v2", "DeploymentFailed", "")  # no id: a report, no device
    checkins.flush()

    assert offered["is_available"] and offered["label"] == "v2"
    assert devices(app) == {
        "a": ("codepush", v1.pk, v2.pk),
        "b": ("codepush", v2.pk, None),
        "binary": ("codepush", None, v2.pk),
    }
    assert counts(v2) == (1, 2, 2, 1)
    assert tried(v2) == {"installed": ["b", "c"], "failed": ["a"]}


# --- adoption and failure rate ---------------------------------------------------------------
def test_the_api_answers_adoption_and_failure_rate_per_release(
    app, api_client_for, pro_account, clear_cache
):
    release(app, 1)
    release(app, 2)
    key = deployment_key(app)
    for device in ("a", "b", "c"):
        buildhub_check(app, device=device, current=sha(2))
    buildhub_check(app, device="d", current=sha(1))
    codepush_deploy_report(key, "v2", "DeploymentFailed", "e")
    checkins.flush()
    client = api_client_for(pro_account, scopes=["builds:read"])

    body = client.get(f"/api/v1/apps/{app.slug}/releases/production/health/").json()

    assert body["active_devices"] == 4 and body["window_days"] == 7
    assert body["failure_threshold_percent"] is None
    [second, first] = body["releases"]
    assert (second["version"], second["live"]) == (2, True)
    assert second["devices_running"] == 3 and second["adoption_percent"] == 75.0
    assert (second["devices_tried"], second["devices_failed"]) == (4, 1)
    assert second["failure_rate_percent"] == 25.0
    assert (second["checks"], second["offered"], second["failure_reports"]) == (3, 1, 1)
    assert first["adoption_percent"] == 25.0 and first["failure_rate_percent"] == 0.0
    assert_error(client.get(f"/api/v1/apps/{app.slug}/releases/moon/health/"), 404, "not_found")


def test_the_threshold_is_set_through_the_api_and_validated(app, api_client_for, pro_account):
    client = api_client_for(pro_account)

    changed = client.patch(
        f"/api/v1/apps/{app.slug}/",
        {"failure_threshold_percent": 20, "failure_action": "rollback", "failure_min_devices": 50},
        format="json",
    )
    refused = client.patch(
        f"/api/v1/apps/{app.slug}/", {"failure_threshold_percent": 120}, format="json"
    )

    assert changed.status_code == 200
    assert (changed.json()["failure_threshold_percent"], changed.json()["failure_action"]) == (
        20,
        "rollback",
    )
    error = assert_error(refused, 400, "invalid")
    assert "failure_threshold_percent" in error["fields"]


# --- the threshold ---------------------------------------------------------------------------
@pytest.fixture
def owner(app):
    user = get_user_model().objects.create_user("owner", "owner@example.com", "pw")
    Membership.objects.create(user=user, account=app.account, role=MembershipRole.OWNER)
    return user


@pytest.fixture
def q_sync(monkeypatch):
    """django-q2 tasks run in the calling process, as a worker would run them."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


def fail_on(app, key, devices_ok, devices_failing):
    for device in devices_ok:
        codepush_check(key, label="v2", package_hash=package_hash(2), client_unique_id=device)
    for device in devices_failing:
        codepush_deploy_report(key, "v2", "DeploymentFailed", device)
    checkins.flush()


def test_crossing_the_threshold_halts_the_rollout_once(app, owner, clear_cache, mailoutbox, q_sync):
    app.failure_threshold_percent, app.failure_min_devices = 50, 4
    app.save()
    release(app, 1)
    v2 = release(app, 2, rollout_percent=40)
    key = deployment_key(app)

    fail_on(app, key, ["ok-1"], ["bad-1"])  # 1 of 2: too few devices to judge
    v2.refresh_from_db()
    assert (v2.rollout_percent, v2.health_action) == (40, "")

    fail_on(app, key, ["ok-2"], ["bad-2"])  # 2 of 4: 50%
    fail_on(app, key, [], ["bad-3", "bad-4"])  # again over: nothing more happens

    v2.refresh_from_db()
    assert (v2.rollout_percent, v2.health_action, v2.rolled_back_at) == (0, "halt", None)
    assert v2.health_action_at is not None
    [entry] = LogEntry.objects.filter(object_id=str(app.pk))
    assert "Release v2 on production halted (rollout 40% → 0%)" in entry.get_change_message()
    assert "failure rate 50.0% (2 of 4 devices)" in entry.get_change_message()
    assert entry.user.username == "buildhub-system" and not entry.user.is_active
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"] and "halted" in mail.subject
    # No new device gets the halted release; the devices that have it keep it.
    assert codepush_check(key, label="v1", client_unique_id="new")["is_available"] is False
    assert releases.current_release(app, "production")["rollout_percent"] == 0


def test_crossing_the_threshold_rolls_back_when_the_app_says_so(
    app, owner, clear_cache, mailoutbox, q_sync
):
    app.failure_threshold_percent, app.failure_min_devices = 30, 3
    app.failure_action = FailureAction.ROLLBACK
    app.save()
    v1, v2 = release(app, 1), release(app, 2)
    key = deployment_key(app)

    fail_on(app, key, ["ok-1", "ok-2"], ["bad-1"])  # 1 of 3: 33%
    fail_on(app, key, [], ["bad-2"])

    v2.refresh_from_db()
    assert v2.rolled_back_at is not None and v2.health_action == "rollback"
    assert releases.current_release(app, "production")["id"] == v1.pk
    [entry] = LogEntry.objects.filter(object_id=str(app.pk))
    assert "Release v2 on production rolled back to v1" in entry.get_change_message()
    assert len(mailoutbox) == 1 and "rolled back to v1" in mailoutbox[0].body


def test_the_admin_app_page_charts_adoption_and_failure_rate(admin_client, app, clear_cache):
    app.failure_threshold_percent = 25
    app.save()
    release(app, 1)
    release(app, 2)
    for device in ("a", "b", "c"):
        buildhub_check(app, device=device, current=sha(2))
    buildhub_check(app, device="d", current=sha(1))
    codepush_deploy_report(deployment_key(app), "v2", "DeploymentFailed", "d")
    checkins.flush()

    page = admin_client.get(f"/admin/publishing/app/{app.pk}/change/").content.decode()

    assert '<svg class="bh-chart"' in page and "threshold 25%" in page
    assert "v2 adoption: 75.0% (3 devices)" in page
    assert "v2 failure rate: 25.0% (1 of 4 devices)" in page
    row = page.split('data-testid="health-production-v2"')[1].split("</tr>")[0]
    assert [cell.split("<")[0] for cell in row.split("<td>")[1:]] == [
        "v2",
        "live",
        "3",
        "75.0%",
        "4",
        "1",
        "25.0%",
    ]
    assert 'name="failure_threshold_percent"' in page
