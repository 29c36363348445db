"""Rate limits of the device endpoints (publishing.device_limits): one budget per app and one
per client address, 429 with Retry-After in the API's error shape, shared by the web
processes through Redis, failing open without it."""

import io
import json
import logging
import subprocess
import zipfile

import pytest
from django.test import Client

from publishing import artifacts, device_limits
from publishing.choices import ArtifactKind, Visibility
from publishing.models import App
from tests.support.codepush import CLIENT, key_of
from tests.support.publishing import finished_ota_build

pytestmark = pytest.mark.django_db(transaction=True)

# Windows of 100 days: no test runs across the end of one, whatever the clock says.
LONG = "100d"
LONG_SECONDS = 100 * 86400
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    settings.DEVICE_RATE_PER_APP = f"1000/{LONG}"
    settings.DEVICE_RATE_PER_IP = f"1000/{LONG}"
    device_limits.reset()
    yield
    device_limits.reset()


@pytest.fixture
def downloads(app, tmp_storage):
    """The app's OTA bundle, and a CodePush package of it."""
    _, bundle, _ = finished_ota_build(app, tmp_path=tmp_storage)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("CodePush/index.android.bundle", b"bundle")
    package_path = tmp_storage / "package.zip"
    package_path.write_bytes(zipped.getvalue())
    package = artifacts.store_file(
        package_path,
        account=app.account,
        kind=ArtifactKind.CODEPUSH_PACKAGE,
        key=f"{app.account.slug}/{app.slug}/package.zip",
        app=app,
        platform="android",
        visibility=Visibility.PUBLIC,
    )
    return {"bundle": bundle, "package": package}


def update_check(device, app, downloads):
    return device.get(
        "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0",
        HTTP_X_APP_KEY=app.app_key,
    )


def device_register(device, app, downloads):
    return device.post(
        "/api/v1/devices/register",
        {"device_id": "device-1", "platform": "android"},
        content_type="application/json",
        HTTP_X_APP_KEY=app.app_key,
    )


def read(response):
    """The response with its file read and closed, as a device leaves it."""
    if response.streaming:
        b"".join(response.streaming_content)
        response.close()
    return response


def bundle_download(device, app, downloads):
    return read(device.get(f"/api/v1/bundles/{downloads['bundle'].pk}/"))


def expo_manifest(device, app, downloads):
    return device.get(
        f"/api/v1/expo/{app.app_key}/manifest",
        HTTP_EXPO_PROTOCOL_VERSION="1",
        HTTP_EXPO_PLATFORM="android",
        HTTP_EXPO_RUNTIME_VERSION="1.0.0",
        HTTP_ACCEPT="multipart/mixed",
    )


def expo_asset(device, app, downloads):
    return device.get(f"/api/v1/expo/assets/{downloads['bundle'].pk}")


def codepush_check(device, app, downloads):
    return device.get(
        "/v0.1/public/codepush/update_check",
        {"deployment_key": key_of(app), "app_version": "1.0.0"},
    )


def codepush_legacy_check(device, app, downloads):
    return device.get("/updateCheck", {"deploymentKey": key_of(app), "appVersion": "1.0.0"})


def codepush_report(path):
    def report(device, app, downloads):
        body = {"deployment_key": key_of(app), "label": "v1", "app_version": "1.0.0"}
        return device.post(path, body, content_type="application/json")

    report.__name__ = f"codepush {path}"
    return report


def codepush_package(device, app, downloads):
    return read(device.get(f"/api/v1/codepush/packages/{downloads['package'].pk}"))


ENDPOINTS = [
    update_check,
    device_register,
    bundle_download,
    expo_manifest,
    expo_asset,
    codepush_check,
    codepush_legacy_check,
    codepush_report("/v0.1/public/codepush/report_status/deploy"),
    codepush_report("/v0.1/public/codepush/report_status/download"),
    codepush_report("/reportStatus/deploy"),
    codepush_report("/reportStatus/download"),
    codepush_package,
]


def assert_refused(response) -> int:
    """A 429 in the API's error shape with a Retry-After within the window; its seconds."""
    assert response.status_code == 429, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == "rate_limited"
    assert "try again in" in body["error"]["message"]
    wait = int(response["Retry-After"])
    assert 1 <= wait <= LONG_SECONDS
    return wait


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.__name__)
def test_each_device_endpoint_answers_429_once_the_apps_budget_is_spent(
    endpoint, app, downloads, settings
):
    settings.DEVICE_RATE_PER_APP = f"3/{LONG}"
    device = Client()

    answers = [endpoint(device, app, downloads).status_code for _ in range(3)]
    refused = endpoint(device, app, downloads)

    assert all(answer < 400 for answer in answers), answers
    assert_refused(refused)
    # Another app's devices, from the same address, are not held up by this one.
    other = App.objects.create(
        account=app.account, slug="other", name="Other", platforms=["android"]
    )
    assert update_check_of(other).status_code == 204


def update_check_of(app, ip="127.0.0.1"):
    return Client(REMOTE_ADDR=ip).get(
        f"/api/v1/updates/check?app={app.slug}&platform=android&runtime_version=1.0.0",
        HTTP_X_APP_KEY=app.app_key,
    )


def test_every_protocol_spends_the_same_budget_of_the_app(app, downloads, settings):
    settings.DEVICE_RATE_PER_APP = f"3/{LONG}"
    device = Client()

    assert update_check(device, app, downloads).status_code == 204
    assert expo_manifest(device, app, downloads).status_code == 204
    assert codepush_check(device, app, downloads).status_code == 200

    assert_refused(update_check(device, app, downloads))
    assert_refused(expo_manifest(device, app, downloads))


def test_a_refused_codepush_check_also_says_no_update_in_its_own_shape(app, settings):
    settings.DEVICE_RATE_PER_APP = f"1/{LONG}"
    device = Client()
    codepush_check(device, app, None)

    refused = codepush_check(device, app, None)
    legacy = codepush_legacy_check(device, app, None)

    assert_refused(refused)
    assert refused.json()["update_info"]["is_available"] is False
    assert_refused(legacy)
    assert legacy.json()["updateInfo"]["isAvailable"] is False


def test_the_codepush_sdk_fails_a_refused_check_with_the_status(live_server, app, settings):
    """What a react-native-code-push app sees: the check fails with "429: ..." (a status
    the SDK counts as recoverable: it checks again at the next launch or resume)."""
    settings.DEVICE_RATE_PER_APP = f"1/{LONG}"

    def run_sdk():
        config = {
            "serverUrl": live_server.url,
            "deploymentKey": key_of(app),
            "appVersion": "1.0.0",
            "clientUniqueId": "device-1",
            "current": None,
        }
        return subprocess.run(
            ["node", str(CLIENT), json.dumps(config)], capture_output=True, text=True, timeout=60
        )

    first, second = run_sdk(), run_sdk()

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["remotePackage"] is None
    assert second.returncode != 0
    assert "CodePushHttpError" in second.stderr
    assert "429: " in second.stderr


def test_the_address_limit_holds_whatever_the_app(app, settings):
    settings.DEVICE_RATE_PER_IP = f"3/{LONG}"
    apps = [app] + [
        App.objects.create(account=app.account, slug=f"app-{n}", name=f"App {n}") for n in range(3)
    ]

    answers = [update_check_of(each, ip="198.51.100.7").status_code for each in apps[:3]]
    refused = update_check_of(apps[3], ip="198.51.100.7")

    assert answers == [204, 204, 204]
    assert_refused(refused)
    assert update_check_of(apps[3], ip="198.51.100.8").status_code == 204


def test_the_address_is_the_one_the_trusted_proxy_saw(app, settings):
    settings.DEVICE_RATE_PER_IP = f"1/{LONG}"
    settings.TRUSTED_PROXY_COUNT = 1

    def through_proxy(client_address):
        return Client(REMOTE_ADDR="10.0.0.1").get(
            "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0",
            HTTP_X_APP_KEY=app.app_key,
            HTTP_X_FORWARDED_FOR=client_address,
        )

    assert through_proxy("203.0.113.1").status_code == 204
    assert through_proxy("203.0.113.2").status_code == 204
    assert_refused(through_proxy("203.0.113.1"))


def test_processes_share_their_counts_through_redis(settings):
    settings.DEVICE_RATE_PER_APP = f"5/{LONG}"
    one = device_limits.Limiter(background=False)
    two = device_limits.Limiter(background=False)

    assert [one.wait_for("app-key", None) for _ in range(3)] == [None] * 3
    one.flush()
    assert [two.wait_for("app-key", None) for _ in range(2)] == [None] * 2
    two.flush()  # the fleet's count is 5: the second process knows it
    refused_by_two = two.wait_for("app-key", None)
    allowed_by_one = one.wait_for("app-key", None)  # the first has not heard yet
    one.flush()

    assert 1 <= refused_by_two <= LONG_SECONDS
    assert allowed_by_one is None
    assert one.wait_for("app-key", None) is not None
    assert one.wait_for("another-app", None) is None


def test_a_web_process_refuses_once_it_hears_the_fleet_spent_the_budget(app, settings):
    settings.DEVICE_RATE_PER_APP = f"3/{LONG}"
    other_process = device_limits.Limiter(background=False)
    for _ in range(3):
        assert other_process.wait_for(app.app_key, "192.0.2.1") is None
    other_process.flush()

    first = update_check_of(app)
    device_limits.flush()  # what this process's flush thread does every second
    second = update_check_of(app)

    assert first.status_code == 204
    assert_refused(second)


def test_without_redis_requests_are_answered_and_a_warning_logged_once(app, settings, caplog):
    settings.DEVICE_RATE_PER_APP = f"3/{LONG}"
    device_limits.reset(UNREACHABLE_REDIS, clear_shared=False)
    caplog.set_level(logging.WARNING, logger="buildhub.device_limits")

    answers = []
    for _ in range(3):
        answers.append(update_check_of(app).status_code)
        device_limits.flush()

    assert answers == [204, 204, 204]
    warnings = [r for r in caplog.records if r.name == "buildhub.device_limits"]
    assert len(warnings) == 1
    assert "Redis unreachable" in warnings[0].getMessage()
    # What this process alone served is already the limit: refusing it is never wrong.
    assert_refused(update_check_of(app))


def test_a_flood_of_addresses_does_not_grow_the_counts_without_bound(settings, monkeypatch):
    monkeypatch.setattr(device_limits, "MAX_KEYS", 100)
    settings.DEVICE_RATE_PER_IP = f"3/{LONG}"
    limiter = device_limits.Limiter(background=False)
    for _ in range(3):
        assert limiter.wait_for("", "192.0.2.99") is None

    flood = [limiter.wait_for("", f"10.0.{n // 250}.{n % 250}") for n in range(1000)]
    tracked_in_flood = len(limiter._kinds["ip"].counts)
    limiter.flush()
    limiter.flush()  # nobody asked since the last one: only the refused address is kept

    assert flood == [None] * 1000  # past the bound, addresses go uncounted, not refused
    assert tracked_in_flood == 100
    assert list(limiter._kinds["ip"].counts) == ["192.0.2.99"]
    assert limiter.wait_for("", "192.0.2.99") is not None


def test_rates_are_read_as_the_other_limits_write_them():
    assert device_limits.parse_rate("600000/m") == (600000, 60)
    assert device_limits.parse_rate("120/5m") == (120, 300)
    assert device_limits.parse_rate("3/100d") == (3, 8640000)
    with pytest.raises(ValueError, match="count/period"):
        device_limits.parse_rate("lots")
