"""The update check answered in front of Django (publishing.asgi) gives Django's answers."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from buildhub.asgi import django_asgi_app
from builds.engine.runner import run_next_job
from publishing import edge, releases
from publishing.asgi import UpdateCheckEdge
from tests.publishing.conftest import finished_ota_build

CHECK = "/api/v1/updates/check?app=shop&platform=android&runtime_version=1.0.0"
PER_RESPONSE = {b"date", b"server"}


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
        response = async_to_sync(communicator.get_response)()
        kept = sorted(
            (name, value) for name, value in response["headers"] if name not in PER_RESPONSE
        )
        return response["status"], kept, response["body"]

    return get


@pytest.fixture(autouse=True)
def fresh_edge(settings):
    settings.UPDATE_CHECK_EDGE_SECONDS = 60
    edge._releases.clear()
    edge._origins.clear()
    yield
    edge._releases.clear()
    edge._origins.clear()


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

    edge.remember(Request(), "key", "production", "shop", {"id": 1})
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
