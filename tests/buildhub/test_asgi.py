import os
import subprocess
import sys

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator

from buildhub.asgi import application


@pytest.mark.django_db(transaction=True)
async def test_asgi_application_serves_http():
    communicator = HttpCommunicator(
        application, "GET", "/healthz", headers=[(b"host", b"localhost")]
    )

    response = await communicator.get_response()
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()

    assert response["status"] == 200
    assert b'"status": "ok"' in response["body"]


async def test_websocket_from_a_foreign_origin_is_closed_with_4403():
    communicator = WebsocketCommunicator(
        application, "/ws/anything/", headers=[(b"origin", b"https://evil.example")]
    )

    connected, _ = await communicator.connect()
    closed = await communicator.receive_output()
    await communicator.disconnect()

    assert connected is True  # accepted only so that a browser sees the close code
    assert closed == {"type": "websocket.close", "code": 4403}


@pytest.mark.integration  # fresh web and worker processes
def test_the_web_process_closes_database_connections_per_request():
    """Under ASGI every request thread is new: a persistent connection would never be reused
    and they would pile up (found by the load suite), so the web process keeps none."""
    show = (
        "import buildhub.asgi; from django.conf import settings; "
        "print(settings.DATABASES['default']['CONN_MAX_AGE'])"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CONN_MAX_AGE", "DJANGO_SETTINGS_MODULE"}
    }
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/unused"  # not connected to
    web = subprocess.run(
        [sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True
    )
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            show.replace("import buildhub.asgi", "import django; django.setup()"),
        ],
        env={**env, "DJANGO_SETTINGS_MODULE": "buildhub.settings"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert web.stdout.split()[-1] == "0"
    assert worker.stdout.split()[-1] == "60"
