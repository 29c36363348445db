"""The update check answered in front of Django (publishing.asgi) gives Django's answers."""

import email.parser
import email.policy
import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from buildhub.asgi import django_asgi_app
from builds.engine.runner import run_next_job
from publishing import checkins, codepush, device_limits, edge, expo, releases, signing
from publishing.asgi import UpdateCheckEdge
from publishing.models import AppSigningKey, DeviceCheckin, Release
from tests.support.publishing import finished_ota_build

CHECK = "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0"
PER_RESPONSE = {b"date", b"server", b"X-Request-ID"}


class CountingDjango:
    """Django's ASGI application, counting the requests that reach it."""

    def __init__(self):
        self.requests = 0

    async def __call__(self, scope, receive, send):
        self.requests += 1
        await django_asgi_app(scope, receive, send)


@pytest.fixture
def django_app():
    return CountingDjango()


@pytest.fixture
def device(django_app):
    """GET through the edge (or straight to Django with ``edge=False``): (status, headers, body)."""
    front = UpdateCheckEdge(django_app)

    def get(path=CHECK, key=None, host=b"testserver", method="GET", edge=True, headers=()):
        sent = [(b"host", host), *headers]
        if key is not None:
            sent.append((b"x-app-key", key.encode()))
        communicator = HttpCommunicator(front if edge else django_app, method, path, headers=sent)
        communicator.scope["client"] = ("192.0.2.10", 40000)  # one device's address
        response = async_to_sync(communicator.get_response)()
        kept = sorted(
            (name, value) for name, value in response["headers"] if name not in PER_RESPONSE
        )
        return response["status"], kept, response["body"]

    return get


@pytest.fixture(autouse=True)
def fresh_edge(settings):
    settings.UPDATE_CHECK_EDGE_SECONDS = 60
    forget_everything()
    yield
    forget_everything()


def forget_everything():
    edge._releases.clear()
    edge._origins.clear()
    edge._deployments.clear()


def publish(api_client_for, app, number, content, tmp_storage):
    client = api_client_for(app.account, scopes=["publish"])
    job, bundle, _ = finished_ota_build(app, content=content, tmp_path=tmp_storage)
    releases.create_version(app, [job.pk])
    response = client.post(
        f"/api/v1/apps/{app.slug}/versions/{number}/publish/",
        {"target_environment": "production"},
        format="json",
    )
    assert response.status_code == 202, response.content
    run_next_job()
    return bundle


@pytest.mark.django_db(transaction=True)
def test_warm_checks_are_answered_in_front_of_django_exactly_as_django_answers(
    app, api_client_for, tmp_storage, device, django_app
):
    bundle = publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    first = device(key=app.app_key)
    assert django_app.requests == 1

    queries = [
        CHECK,  # the update
        CHECK.replace("1.0.0", "2.0.0"),  # nothing for this runtime: 204
        f"{CHECK}&current={bundle.sha256}",  # already current: 204
        f"{CHECK}&channel=preview",  # another channel: 204
        f"{CHECK}&device=phone-1&env=production",
    ]
    from_edge = [device(path, key=app.app_key) for path in queries]
    assert django_app.requests == 1  # none of them reached Django
    from_django = [device(path, key=app.app_key, edge=False) for path in queries]

    for ours, theirs in zip(from_edge, from_django, strict=True):
        assert ours == theirs
    assert from_edge[0] == first
    status, headers, body = from_edge[0]
    assert status == 200
    assert json.loads(body)["sha256"] == bundle.sha256
    assert json.loads(body)["bundle_url"].startswith("http://testserver/api/v1/bundles/")
    assert (b"X-Content-Type-Options", b"nosniff") in headers
    assert (b"Content-Security-Policy", b"frame-ancestors 'none'") in headers
    assert [status for status, _, _ in from_edge[1:]] == [204, 204, 204, 200]


@pytest.mark.django_db(transaction=True)
def test_errors_and_unusual_requests_still_come_from_django(
    app, api_client_for, tmp_storage, device, django_app
):
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    assert device(key=app.app_key)[0] == 200
    before = django_app.requests

    missing_key = device()
    wrong_key = device(key="not-a-key")
    other_slug = device(CHECK.replace("app=shop", "app=other"), key=app.app_key)
    bad_query = device(f"{CHECK}&platform=symbian&current=xyz", key=app.app_key)
    padded = device(CHECK.replace("1.0.0", "1.0.0%20"), key=app.app_key)
    head = device(key=app.app_key, method="HEAD")
    repeated = device(key=app.app_key, headers=[(b"x-app-key", b"other")])
    other_host = device(key=app.app_key, host=b"localhost")
    foreign_host = device(key=app.app_key, host=b"evil.example")

    assert django_app.requests == before + 9
    assert missing_key[0] == wrong_key[0] == other_slug[0] == repeated[0] == 401
    assert json.loads(missing_key[2])["error"]["code"] == "not_authenticated"
    assert bad_query[0] == 400
    assert set(json.loads(bad_query[2])["error"]["fields"]) == {"platform", "current"}
    assert padded[0] == 200  # the serializer trims it, as before
    assert head[0] == 200
    assert json.loads(other_host[2])["bundle_url"].startswith("http://localhost/")
    assert foreign_host[0] == 400
    # The new host is known now; the foreign one never is.
    device(key=app.app_key, host=b"localhost")
    device(key=app.app_key, host=b"evil.example")
    assert django_app.requests == before + 10


@pytest.mark.django_db(transaction=True)
def test_publish_rollback_and_app_changes_reach_devices_at_once(
    app, api_client_for, tmp_storage, device
):
    first = publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    assert json.loads(device(key=app.app_key)[2])["sha256"] == first.sha256
    second = publish(api_client_for, app, 2, b"\xc6\x1f\xbc\x03two", tmp_storage)
    assert json.loads(device(key=app.app_key)[2])["sha256"] == second.sha256

    client = api_client_for(app.account, scopes=["publish"])
    rolled_back = client.post("/api/v1/apps/shop/releases/production/rollback/")
    assert rolled_back.status_code == 200, rolled_back.content
    assert json.loads(device(key=app.app_key)[2])["sha256"] == first.sha256

    app.slug = "shop-2"
    app.save()
    assert device(key=app.app_key)[0] == 401
    assert device(CHECK.replace("app=shop", "app=shop-2"), key=app.app_key)[0] == 200


@pytest.mark.django_db(transaction=True)
def test_another_processs_publish_is_seen_once_the_entry_expires(
    app, api_client_for, tmp_storage, device, django_app, settings, monkeypatch
):
    settings.UPDATE_CHECK_EDGE_SECONDS = 5
    clock = [1000.0]
    monkeypatch.setattr(edge.time, "monotonic", lambda: clock[0])
    first = publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    device(key=app.app_key)
    # Published by another web process: this one's memory is not told.
    monkeypatch.setattr(edge, "forget", lambda *args: None)
    second = publish(api_client_for, app, 2, b"\xc6\x1f\xbc\x03two", tmp_storage)
    monkeypatch.undo()
    monkeypatch.setattr(edge.time, "monotonic", lambda: clock[0])
    requests = django_app.requests

    assert json.loads(device(key=app.app_key)[2])["sha256"] == first.sha256
    clock[0] += 5.1
    assert json.loads(device(key=app.app_key)[2])["sha256"] == second.sha256
    assert django_app.requests == requests + 1  # the one check that refreshed it


def test_an_expired_entry_is_refreshed_by_one_check_while_the_others_get_the_old_one(
    monkeypatch, settings
):
    settings.UPDATE_CHECK_EDGE_SECONDS = 1
    clock = [100.0]
    monkeypatch.setattr(edge.time, "monotonic", lambda: clock[0])

    class Request:
        scope = {edge.SCOPE_SLOT: {}}

        def build_absolute_uri(self, path):
            return "http://testserver" + path

    edge.remember(Request(), "key", "production", "shop", {"id": 1}, app_id=1)
    assert edge.remembered_release("key", "production", "shop") == (True, {"id": 1})
    assert edge.remembered_release("key", "production", "other") == (False, None)
    assert edge.remembered_release("key", "staging", "shop") == (False, None)
    clock[0] += 1.5
    assert edge.remembered_release("key", "production", "shop") == (False, None)  # refreshes
    assert edge.remembered_release("key", "production", "shop") == (True, {"id": 1})
    clock[0] += edge.REFRESH_SECONDS + 0.1  # the refresh never came back: ask Django again
    assert edge.remembered_release("key", "production", "shop") == (False, None)
    edge.forget("key")
    assert edge.remembered_release("key", "production", "shop") == (False, None)


@pytest.mark.django_db(transaction=True)
def test_with_no_edge_time_every_check_goes_to_django(
    app, api_client_for, tmp_storage, device, django_app, settings
):
    settings.UPDATE_CHECK_EDGE_SECONDS = 0
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    answers = [device(key=app.app_key) for _ in range(3)]
    assert django_app.requests == 3
    assert [status for status, _, _ in answers] == [200, 200, 200]


# --- Expo and CodePush ------------------------------------------------------------------------

EXPO_HEADERS = [
    (b"expo-protocol-version", b"1"),
    (b"expo-platform", b"android"),
    (b"expo-runtime-version", b"1.0.0"),
    (b"expo-channel-name", b"production"),
]


def android_production_key(app) -> str:
    """The CodePush deployment key of the app's production environment on Android."""
    deployments = codepush.deployments_of(app)
    return next(d.key for d in deployments if (d.env, d.platform) == ("production", "android"))


def expo_path(app):
    return f"/api/v1/expo/{app.app_key}/manifest"


def readable(answer):
    """(status, headers, parts): a multipart body as its parts (each answer from Django has a
    boundary of its own), other bodies as they are."""
    status, headers, body = answer
    content_type = dict(headers).get(b"Content-Type", b"").decode()
    if not content_type.startswith("multipart/"):
        return status, headers, body
    raw = f"content-type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = [(sorted(part.items()), part.get_payload(decode=True)) for part in message.iter_parts()]
    kept = [(name, value) for name, value in headers if name != b"Content-Type"]
    return status, kept, parts


@pytest.mark.django_db(transaction=True)
def test_expo_manifests_signed_or_not_are_replayed_in_front_of_django_as_django_gave_them(
    app, api_client_for, tmp_storage, device, django_app
):
    bundle = publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    signing.generate_key(app)
    json_accept = [(b"accept", b"application/expo+json")]
    asks = [
        [*EXPO_HEADERS],  # multipart, unsigned
        [*EXPO_HEADERS, (b"expo-expect-signature", b'sig, keyid="main", alg="rsa-v1_5-sha256"')],
        [*EXPO_HEADERS, *json_accept],
        [*EXPO_HEADERS[:2], (b"expo-runtime-version", b"2.0.0"), EXPO_HEADERS[3]],  # 204
        [*EXPO_HEADERS, (b"eas-client-id", b"phone-1")],
    ]
    for headers in asks[:3] + asks[3:4]:  # each kind of answer once through Django
        device(expo_path(app), headers=headers)
    requests = django_app.requests

    from_edge = [device(expo_path(app), headers=headers) for headers in asks]
    assert django_app.requests == requests  # none of them reached Django
    from_django = [device(expo_path(app), headers=headers, edge=False) for headers in asks]
    for ours, theirs in zip(from_edge, from_django, strict=True):
        assert readable(ours) == readable(theirs)

    assert [status for status, _, _ in from_edge] == [200, 200, 200, 204, 200]
    signed = readable(from_edge[1])[2][0]
    manifest = json.loads(signed[1])
    assert manifest["id"] == expo.manifest_id(manifest["extra"]["buildhub"]["releaseId"], "android")
    assert manifest["launchAsset"]["hash"] == expo.hash_of(bundle.sha256)
    signature = dict(signed[0])["expo-signature"]
    certificate = AppSigningKey.objects.get(app=app).certificate_pem
    sig = signature.split('sig="')[1].split('"')[0]
    assert signing.verify(certificate, signed[1], sig)
    # The update the device already runs: a 204, from the edge too.
    current = [*EXPO_HEADERS, (b"expo-current-update-id", manifest["id"].encode())]
    assert device(expo_path(app), headers=current)[0] == 204
    assert django_app.requests == requests + len(asks)


@pytest.mark.django_db(transaction=True)
def test_expo_rollouts_and_rollbacks_decided_in_front_of_django_are_djangos(
    app, api_client_for, tmp_storage, device, django_app
):
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    client = api_client_for(app.account, scopes=["publish"])
    job, _, _ = finished_ota_build(app, content=b"\xc6\x1f\xbc\x03two", tmp_path=tmp_storage)
    releases.create_version(app, [job.pk])
    published = client.post(
        "/api/v1/apps/shop/versions/2/publish/",
        {"target_environment": "production", "rollout_percent": 50},
        format="json",
    )
    assert published.status_code == 202, published.content
    run_next_job()
    devices = [[*EXPO_HEADERS, (b"eas-client-id", f"phone-{n}".encode())] for n in range(40)]
    device(expo_path(app), headers=devices[0])

    from_edge = [readable(device(expo_path(app), headers=headers)) for headers in devices]
    from_django = [readable(device(expo_path(app), headers=h, edge=False)) for h in devices]
    assert from_edge == from_django
    assert {status for status, _, _ in from_edge} == {200, 204}  # half in, half out

    rolled_back = client.post(
        "/api/v1/apps/shop/releases/production/rollback/", {"to": "embedded"}, format="json"
    )
    assert rolled_back.status_code == 200, rolled_back.content
    status, _, parts = readable(device(expo_path(app), headers=devices[0]))
    assert status == 200
    assert json.loads(parts[0][1])["type"] == "rollBackToEmbedded"


@pytest.mark.django_db(transaction=True)
def test_codepush_checks_are_answered_in_front_of_django_as_django_answers(
    app, api_client_for, tmp_storage, device, django_app
):
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    key = android_production_key(app)
    modern = "/v0.1/public/codepush/update_check?deployment_key={}&app_version={}&{}"
    legacy = "/updateCheck?deploymentKey={}&appVersion={}&{}"
    device(modern.format(key, "1.0.0", ""))
    device(legacy.format(key, "1.0.0", ""))
    requests = django_app.requests
    answer = json.loads(device(modern.format(key, "1.0.0", ""))[2])["update_info"]
    paths = [
        modern.format(key, "1.0.0", "client_unique_id=d1"),
        modern.format(key, "1.0.0", f"package_hash={answer['package_hash']}&label=v1"),
        modern.format(key, "0.9.0", ""),  # outside the release's range? "*": still an update
        modern.format(key, "not-a-version", ""),
        legacy.format(key, "1.0.0", "clientUniqueId=d2"),
    ]
    from_edge = [device(path) for path in paths]
    assert django_app.requests == requests
    from_django = [device(path, edge=False) for path in paths]

    assert from_edge == from_django
    assert answer["is_available"] is True
    assert answer["download_url"].startswith("http://testserver/api/v1/codepush/packages/")
    bodies = [json.loads(body) for _, _, body in from_edge]
    assert bodies[1]["update_info"]["is_available"] is False
    assert bodies[3]["update_info"]["is_available"] is False
    assert bodies[4]["updateInfo"]["isAvailable"] is True
    # An unknown key is Django's to answer (with "no update").
    requests = django_app.requests
    device(modern.format("dk_unknown", "1.0.0", ""))
    assert django_app.requests == requests + 1


@pytest.mark.django_db(transaction=True)
def test_checks_answered_in_front_of_django_spend_the_device_budgets(
    app, api_client_for, tmp_storage, device, django_app, settings
):
    settings.DEVICE_RATE_PER_APP = "1000/100d"
    settings.DEVICE_RATE_PER_IP = "4/100d"
    device_limits.reset()
    try:
        publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
        answers = [device(key=app.app_key) for _ in range(6)]
        assert [status for status, _, _ in answers] == [200, 200, 200, 200, 429, 429]
        assert django_app.requests == 3  # the first check, and the two refusals Django words
        status, headers, body = answers[4]
        assert json.loads(body)["error"]["code"] == "rate_limited"
        assert int(dict(headers)[b"Retry-After"]) > 0
        # Another address has its own budget: an edge answer again.
        forwarded = [(b"x-forwarded-for", b"198.51.100.7")]
        settings.TRUSTED_PROXY_COUNT = 1
        assert device(key=app.app_key, headers=forwarded)[0] == 200
        assert django_app.requests == 3
    finally:
        device_limits.reset()


@pytest.mark.django_db(transaction=True)
def test_checks_answered_in_front_of_django_record_their_check_ins(
    app, api_client_for, tmp_storage, device, django_app
):
    checkins.discard()
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    key = android_production_key(app)
    codepush_check = "/v0.1/public/codepush/update_check?deployment_key={}&app_version=1.0.0&{}"
    device(f"{CHECK}&device=warm-up", key=app.app_key)
    device(expo_path(app), headers=[*EXPO_HEADERS, (b"eas-client-id", b"warm-up")])
    device(codepush_check.format(key, "client_unique_id=warm-up"))
    checkins.discard()
    requests = django_app.requests
    release = Release.objects.get(app=app, env="production")
    running = release.manifest["bundles"]["android"]["codepush"]["package_hash"]

    assert device(f"{CHECK}&device=phone-a", key=app.app_key)[0] == 200
    assert device(expo_path(app), headers=[*EXPO_HEADERS, (b"eas-client-id", b"phone-b")])[0] == 200
    phone_c = f"client_unique_id=phone-c&label=v1&package_hash={running}"
    assert device(codepush_check.format(key, phone_c))[0] == 200
    assert django_app.requests == requests  # all three answered by the edge
    assert checkins.flush() == 3

    rows = {
        row.device_id: (row.protocol, row.offered_release_id, row.running_release_id)
        for row in DeviceCheckin.objects.filter(app=app)
    }
    assert rows == {
        "phone-a": ("buildhub", release.pk, None),
        "phone-b": ("expo", release.pk, None),
        "phone-c": ("codepush", None, release.pk),  # it runs v1 already: nothing offered
    }


@pytest.mark.django_db(transaction=True)
def test_update_checks_publishes_and_rollbacks_are_counted_for_the_metrics(
    app, api_client_for, tmp_storage, device
):
    from prometheus_client.parser import text_string_to_metric_families

    from buildhub.metrics import exposition

    def counts():
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition().decode())
            for sample in family.samples
        }

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    before = counts()
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    device(key=app.app_key)  # Django answers, and the edge learns the origin
    device(key=app.app_key)
    device(CHECK.replace("1.0.0", "2.0.0"), key=app.app_key)
    client = api_client_for(app.account, scopes=["publish"])
    rolled_back = client.post(
        "/api/v1/apps/shop/releases/production/rollback/", {"to": "embedded"}, format="json"
    )
    assert rolled_back.status_code == 200, rolled_back.content
    after = counts()

    checks = "buildhub_update_checks_total"
    assert grew(checks, protocol="update", answer="update", served_by="django") >= 1
    assert grew(checks, protocol="update", answer="update", served_by="edge") >= 1
    assert grew(checks, protocol="update", answer="no_update", served_by="edge") >= 1
    assert grew("buildhub_publishes_total", env="production") >= 1
    assert grew("buildhub_rollbacks_total", env="production") >= 1


@pytest.mark.django_db(transaction=True)
def test_answers_in_front_of_django_carry_a_request_id_as_djangos_do(
    app, api_client_for, tmp_storage, django_app
):
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    front = UpdateCheckEdge(django_app)

    def request_id(given=None):
        sent = [(b"host", b"testserver"), (b"x-app-key", app.app_key.encode())]
        if given is not None:
            sent.append((b"x-request-id", given))
        communicator = HttpCommunicator(front, "GET", CHECK, headers=sent)
        response = async_to_sync(communicator.get_response)()
        return dict(response["headers"])[b"X-Request-ID"]

    request_id()  # through Django, which the edge then answers for
    requests = django_app.requests
    assert request_id(b"ci-run-42.step-3") == b"ci-run-42.step-3"
    made = {request_id(), request_id(), request_id(b"not a plain token")}
    assert len(made) == 3 and all(len(value) == 32 for value in made)
    assert django_app.requests == requests


@pytest.mark.django_db(transaction=True)
def test_when_kept_answers_expire_one_check_refreshes_them_while_the_others_are_answered(
    app, api_client_for, tmp_storage, device, django_app, settings, monkeypatch
):
    settings.UPDATE_CHECK_EDGE_SECONDS = 5
    clock = [1000.0]
    monkeypatch.setattr(edge.time, "monotonic", lambda: clock[0])
    publish(api_client_for, app, 1, b"\xc6\x1f\xbc\x03one", tmp_storage)
    key = android_production_key(app)
    codepush_check = f"/v0.1/public/codepush/update_check?deployment_key={key}&app_version=1.0.0"
    first_expo = device(expo_path(app), headers=EXPO_HEADERS)
    first_codepush = device(codepush_check)
    requests = django_app.requests

    clock[0] += 5.1  # everything kept has expired: one check of each kind goes to Django
    expo_answers = [device(expo_path(app), headers=EXPO_HEADERS) for _ in range(5)]
    codepush_answers = [device(codepush_check) for _ in range(5)]

    assert django_app.requests == requests + 2
    assert [readable(answer) for answer in expo_answers] == [readable(first_expo)] * 5
    assert [answer[2] for answer in codepush_answers] == [first_codepush[2]] * 5
