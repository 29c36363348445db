import uuid

import pytest
from channels.db import database_sync_to_async as sync_to_async  # closes its connections
from channels.testing import WebsocketCommunicator
from django.test import Client

from buildevents import live
from buildevents.consumers import BuildStatusConsumer
from buildevents.models import BuildRun
from buildhub.asgi import application
from builds.services import create_account

PATH = "/ws/admin/build-status/"
pytestmark = pytest.mark.django_db(transaction=True)


def session_headers(user):
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    return [(b"cookie", f"sessionid={cookie}".encode()), (b"origin", b"http://localhost")]


async def connect(headers):
    communicator = WebsocketCommunicator(application, PATH, headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


def start_run():
    account = create_account("Acme")
    return BuildRun.objects.create(
        run_id=uuid.uuid4(), account=account, command="make release", started_at="2026-03-02T09:00Z"
    )


async def test_staff_get_the_status_then_every_push(staff, clear_cache):
    communicator, connected = await connect(await sync_to_async(session_headers)(staff))
    assert connected

    first = await communicator.receive_json_from(timeout=5)
    assert first["running"] is False and first["activeRun"] is None

    run = await sync_to_async(start_run)()
    await sync_to_async(live.push_build_status)()
    pushed = await communicator.receive_json_from(timeout=5)
    assert pushed["activeRun"]["runId"] == str(run.run_id)
    assert pushed["activeRun"]["command"] == "make release"

    await communicator.send_json_to({})  # a page back from the background asks again
    again = await communicator.receive_json_from(timeout=5)
    assert again["activeRun"]["runId"] == str(run.run_id)
    await communicator.disconnect()


async def test_non_staff_users_are_refused(django_user_model):
    customer = await sync_to_async(django_user_model.objects.create_user)("c", "c@x.io", "pw-c-12")
    communicator = WebsocketCommunicator(BuildStatusConsumer.as_asgi(), PATH)
    communicator.scope["user"] = customer

    connected, code = await communicator.connect()

    assert (connected, code) == (False, 4403)


async def test_anonymous_visitors_are_refused():
    communicator, connected = await connect([(b"origin", b"http://localhost")])

    assert connected is False
