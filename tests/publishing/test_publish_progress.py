"""A publish as the client watching its job sees it over the progress websocket."""

import json

import pytest
from asgiref.sync import sync_to_async

from builds.consumers import Close
from builds.engine.runner import run_next_job
from publishing import releases
from tests.support.publishing import finished_ota_build
from tests.support.websocket import WAIT, a_token, open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH_STEPS = [
    (10, "Assets verified"),
    (30, "release.json generated"),
    (50, "release.json uploaded"),
    (80, "Assets available"),
    (100, "Published"),
]


async def messages_until_closed(socket):
    """Every JSON message the server sends, and the code it closes with."""
    messages = []
    while True:
        output = await socket.receive_output(timeout=WAIT)
        if output["type"] == "websocket.close":
            await socket.disconnect(output["code"], timeout=WAIT)
            return messages, output["code"]
        messages.append(json.loads(output["text"]))


@sync_to_async
def queue_publish(app, api_client_for, tmp_path):
    build, _, _ = finished_ota_build(app, tmp_path=tmp_path)
    releases.create_version(app, [build.pk])
    client = api_client_for(app.account, scopes=["publish"])
    response = client.post(
        f"/api/v1/apps/{app.slug}/versions/1/publish/",
        {"target_environment": "production"},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


async def test_a_publish_reports_10_30_50_80_100_to_its_watcher(app, api_client_for, tmp_storage):
    job_id = await queue_publish(app, api_client_for, tmp_storage)
    socket = await open_socket(job_id, token=await a_token(app.account))
    (snapshot,) = await receive(socket, 1)
    assert (snapshot["status"], snapshot["progress"]) == ("queued", 0)

    assert await sync_to_async(run_next_job)() == job_id
    messages, code = await messages_until_closed(socket)

    statuses = [m for m in messages if m["event"] == "status"]
    progress = [m["progress"] for m in statuses]
    assert progress == sorted(progress), "progress never goes back"
    running = [(m["progress"], m["stage"]) for m in statuses if m["status"] == "running"]
    assert [step for step in running if step in PUBLISH_STEPS] == PUBLISH_STEPS
    final = statuses[-1]
    assert (final["status"], final["progress"], final["stage"]) == ("succeeded", 100, "Published")
    logged = [m["message"] for m in messages if m["event"] == "log"]
    assert any(line.startswith("switched production/") for line in logged)
    assert code == Close.DONE
