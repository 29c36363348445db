"""The progress websocket while a real worker process runs a real child tool."""

import pytest
from asgiref.sync import sync_to_async

from builds.choices import TERMINAL_STATES, JobStatus
from builds.consumers import Close
from tests.builds.engine_helpers import sleep_job
from tests.support.accounts import make_account
from tests.support.websocket import a_token, close_code, open_socket

pytestmark = pytest.mark.django_db(transaction=True)

STARTUP = 90  # a cold worker on a busy machine; a wait, not an assertion of speed


async def test_a_client_follows_a_job_run_by_a_worker_process(worker_processes):
    account = await sync_to_async(make_account)("enterprise", "Live Watch Co")
    job = await sync_to_async(sleep_job)(account, "watched.marker", seconds=1.2, steps=4)
    token = await a_token(account)
    socket = await open_socket(job.pk, token=token)
    snapshot = await socket.receive_json_from(timeout=STARTUP)

    worker_processes.start("runcluster", BUILDHUB_WORKERS="1")
    received = []
    while not received or received[-1].get("status") not in TERMINAL_STATES:
        received.append(await socket.receive_json_from(timeout=STARTUP))
    code = await close_code(socket)

    statuses = [m for m in received if m["event"] == "status"]
    lines = [m for m in received if m["event"] == "log"]
    assert snapshot["status"] == JobStatus.QUEUED
    assert statuses[0]["status"] == JobStatus.RUNNING
    assert statuses[-1]["status"] == JobStatus.SUCCEEDED
    assert code == Close.DONE
    progress = [m["progress"] for m in statuses]
    assert progress == sorted(progress)
    assert {25, 50, 75, 100} <= set(progress)
    states = [snapshot["state_seq"], *(m["state_seq"] for m in statuses)]
    assert states == sorted(set(states))  # no status twice, none out of order
    assert [m["seq"] for m in lines] == list(range(1, len(lines) + 1))  # no gap, no repeat
    assert [m["message"] for m in lines if m["message"].startswith("step")] == [
        f"step {n}/4" for n in range(1, 5)
    ]
    assert statuses[-1]["log_seq"] == lines[-1]["seq"]
