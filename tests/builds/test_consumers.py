"""The job progress websocket on the real Redis channel layer and the real engine calls."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from builds.choices import JobStatus, LogLevel, MembershipRole, TokenScope
from builds.consumers import PROTOCOL, Close
from builds.engine import events, lifecycle, logs
from builds.engine.claim import claim_next_job
from builds.models import ApiToken, Job, Membership
from builds.services import revoke_api_token
from tests.support.websocket import (
    WAIT,
    a_job,
    a_token,
    close_code,
    communicator_for,
    open_socket,
    receive,
    refused_with,
)

pytestmark = pytest.mark.django_db(transaction=True)


def log_lines(*messages):
    return [(timezone.now(), LogLevel.INFO, message) for message in messages]


@sync_to_async
def a_session(*, staff=False, member_of=None, username="watcher"):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username, is_staff=staff)
    if member_of is not None:
        Membership.objects.create(user=user, account=member_of, role=MembershipRole.MEMBER)
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@sync_to_async
def claim(job):
    claimed = claim_next_job("test-worker")
    assert claimed.pk == job.pk
    return claimed


async def test_snapshot_then_the_log_lines_after_the_given_seq():
    job = await a_job()
    await sync_to_async(logs.append_logs)(job.pk, log_lines("one", "two", "three", "four"))
    token = await a_token(job.account)

    socket = await open_socket(job.pk, token=token, after=2)
    snapshot, *lines = await receive(socket, 3)

    assert snapshot["event"] == "snapshot"
    assert snapshot["job"] == str(job.pk)
    assert snapshot["status"] == JobStatus.QUEUED
    assert (snapshot["progress"], snapshot["stage"], snapshot["attempts"]) == (0, "Queued", 0)
    assert snapshot["log_seq"] == 4
    assert [(line["event"], line["seq"], line["message"]) for line in lines] == [
        ("log", 3, "three"),
        ("log", 4, "four"),
    ]
    assert await socket.receive_nothing()  # a queued job: the socket stays open, quiet
    await socket.disconnect()


async def test_live_changes_arrive_in_order_and_the_socket_closes_when_the_job_ends():
    job = await a_job()
    session = await a_session(member_of=job.account)
    socket = await open_socket(job.pk, session=session)
    (snapshot,) = await receive(socket, 1)

    claimed = await claim(job)
    await sync_to_async(lifecycle.set_progress)(job.pk, claimed.lease_token, 40, "compiling")
    await sync_to_async(logs.append_logs)(
        job.pk, log_lines("compiled 12 files"), lease_token=claimed.lease_token
    )
    await sync_to_async(lifecycle.succeed_job)(job.pk, claimed.lease_token, {"ok": True})
    running, progress, line, done = await receive(socket, 4)

    assert (running["event"], running["status"], running["stage"]) == (
        "status",
        "running",
        "Starting",
    )
    assert (progress["progress"], progress["stage"]) == (40, "compiling")
    assert (line["event"], line["seq"], line["message"]) == ("log", 1, "compiled 12 files")
    assert (done["status"], done["progress"], done["log_seq"]) == ("succeeded", 100, 1)
    states = [m["state_seq"] for m in (snapshot, running, progress, done)]
    assert states == sorted(set(states))
    assert await close_code(socket) == Close.DONE


async def test_resume_with_after_gives_every_line_once_and_in_order():
    job = await a_job()
    token = await a_token(job.account)
    claimed = await claim(job)
    write = sync_to_async(logs.append_logs)

    socket = await open_socket(job.pk, token=token)
    await receive(socket, 1)  # snapshot
    await write(job.pk, log_lines("a", "b", "c"), lease_token=claimed.lease_token)
    first = await receive(socket, 3)
    await socket.disconnect()

    await write(job.pk, log_lines("d", "e"), lease_token=claimed.lease_token)  # while away
    socket = await open_socket(job.pk, token=token, after=first[-1]["seq"])
    snapshot, *missed = await receive(socket, 3)
    await write(job.pk, log_lines("f"), lease_token=claimed.lease_token)
    (live,) = await receive(socket, 1)

    seen = [line["message"] for line in [*first, *missed, live]]
    assert seen == ["a", "b", "c", "d", "e", "f"]
    assert [line["seq"] for line in [*first, *missed, live]] == [1, 2, 3, 4, 5, 6]
    assert snapshot["log_seq"] == 5
    assert await socket.receive_nothing()
    await socket.disconnect()


async def test_stale_and_repeated_events_are_dropped_and_a_jump_is_filled_from_the_database(
    monkeypatch,
):
    """What the group may deliver around the snapshot: events committed before it (older
    state, lines already read) and, after a lost push, a line that jumps ahead."""
    job = await a_job()
    token = await a_token(job.account)
    claimed = await claim(job)
    await sync_to_async(logs.append_logs)(job.pk, log_lines("one", "two"))
    before = await sync_to_async(lambda: events.status_message(Job.objects.get(pk=job.pk)))()

    socket = await open_socket(job.pk, token=token)
    await receive(socket, 3)  # snapshot, one, two
    push = sync_to_async(events.push)
    await push(job.pk, {**before, "state_seq": before["state_seq"] - 1, "stage": "stale"})
    await push(job.pk, before)  # the snapshot's own state, pushed after it was read
    await push(job.pk, logs.log_message(await sync_to_async(job.logs.get)(seq=2)))
    assert await socket.receive_nothing()

    with monkeypatch.context() as patched:  # these pushes are lost (Redis hiccup)
        patched.setattr(events, "push", lambda *args: None)
        await sync_to_async(logs.append_logs)(
            job.pk, log_lines("three", "four"), lease_token=claimed.lease_token
        )
    await sync_to_async(logs.append_logs)(
        job.pk, log_lines("five"), lease_token=claimed.lease_token
    )
    filled = await receive(socket, 3)

    assert [(line["seq"], line["message"]) for line in filled] == [
        (3, "three"),
        (4, "four"),
        (5, "five"),
    ]
    assert await socket.receive_nothing()
    await socket.disconnect()


async def test_a_status_change_brings_the_log_lines_written_before_it(monkeypatch):
    job = await a_job()
    token = await a_token(job.account)
    claimed = await claim(job)
    socket = await open_socket(job.pk, token=token)
    await receive(socket, 1)

    delayed = []
    with monkeypatch.context() as patched:  # the lines' pushes are late (another thread)
        patched.setattr(events, "push", lambda *args: delayed.append(args))
        await sync_to_async(logs.append_logs)(
            job.pk, log_lines("x", "y"), lease_token=claimed.lease_token
        )
    await sync_to_async(lifecycle.set_progress)(job.pk, claimed.lease_token, 10, "packing")
    one, two, status = await receive(socket, 3)
    for args in delayed:
        await sync_to_async(events.push)(*args)

    await sync_to_async(lifecycle.set_progress)(job.pk, claimed.lease_token, 20)
    (after_them,) = await receive(socket, 1)

    assert [one["message"], two["message"]] == ["x", "y"]
    assert (status["event"], status["progress"], status["log_seq"]) == ("status", 10, 2)
    assert after_them["progress"] == 20  # the late pushes of x and y came before: dropped
    await socket.disconnect()


async def test_an_ended_job_sends_its_snapshot_and_lines_then_closes():
    job = await a_job()
    claimed = await claim(job)
    await sync_to_async(logs.append_logs)(
        job.pk, log_lines("only line"), lease_token=claimed.lease_token
    )
    await sync_to_async(lifecycle.fail_job)(job.pk, claimed.lease_token, "boom", retryable=False)
    session = await a_session(staff=True)

    socket = await open_socket(job.pk, session=session)
    snapshot, line = await receive(socket, 2)

    assert (snapshot["status"], snapshot["error"]) == ("failed", "boom")
    assert line["message"] == "only line"
    assert await close_code(socket) == Close.DONE


async def test_a_token_may_come_as_a_subprotocol_for_browsers():
    job = await a_job()
    token = await a_token(job.account)
    communicator = communicator_for(job.pk, protocols=[PROTOCOL, f"bearer.{token}"])

    connected, subprotocol = await communicator.connect(timeout=WAIT)
    (snapshot,) = await receive(communicator, 1)

    assert (connected, subprotocol) == (True, PROTOCOL)
    assert snapshot["event"] == "snapshot"
    await communicator.disconnect()


async def test_refusals_close_with_a_code_that_says_why():
    job = await a_job()
    other = await a_job("starter", "Other Co")
    good = await a_token(job.account)
    write_only = await a_token(job.account, scopes=[TokenScope.BUILDS_WRITE])
    revoked = await a_token(job.account)
    await sync_to_async(lambda: revoke_api_token(ApiToken.objects.get(key_id=revoked[3:15])))()
    outsider = await a_session(member_of=other.account, username="outsider")

    assert await refused_with(job.pk) == Close.UNAUTHENTICATED
    assert await refused_with(job.pk, token="bh_nothing_here") == Close.UNAUTHENTICATED
    assert await refused_with(job.pk, token=revoked) == Close.UNAUTHENTICATED
    assert await refused_with(job.pk, session="not-a-session") == Close.UNAUTHENTICATED
    assert await refused_with(job.pk, token=write_only) == Close.FORBIDDEN
    assert await refused_with(other.pk, token=good) == Close.NOT_FOUND
    assert await refused_with(job.pk, session=outsider) == Close.NOT_FOUND
    assert await refused_with("not-a-uuid", token=good) == Close.NOT_FOUND
    assert await refused_with("00000000-0000-4000-8000-000000000000", token=good) == 4404
    assert await refused_with(job.pk, token=good, after="-1") == Close.BAD_REQUEST


async def test_a_foreign_origin_is_closed_with_4403_even_with_good_credentials():
    job = await a_job()
    session = await a_session(staff=True)

    code = await refused_with(job.pk, session=session, origin=b"https://evil.example")

    assert code == Close.FORBIDDEN


async def test_clients_without_an_origin_header_are_not_browsers_and_may_use_a_token():
    job = await a_job()
    token = await a_token(job.account)

    socket = await open_socket(job.pk, token=token, origin=None)

    assert (await receive(socket, 1))[0]["event"] == "snapshot"
    await socket.disconnect()
