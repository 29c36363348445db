"""Pushes go only to job groups someone watches; the look costs one ZCARD."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from builds.engine import events

GROUP = events.job_group("00000000-0000-0000-0000-00000000feed")


def test_a_group_is_watched_exactly_while_it_has_members():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    assert events._push_loop.watched(GROUP) is False

    async_to_sync(layer.group_add)(GROUP, channel)
    try:
        assert events._push_loop.watched(GROUP) is True
    finally:
        async_to_sync(layer.group_discard)(GROUP, channel)

    assert events._push_loop.watched(GROUP) is False


async def receive(layer, channel, count):
    return [await layer.receive(channel) for _ in range(count)]


def test_a_watched_job_gets_every_event_in_order():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(GROUP, channel)
    try:
        events.push(GROUP.removeprefix("job."), {"event": "log", "seq": 1}, {"event": "status"})
        received = async_to_sync(receive)(layer, channel, 2)
    finally:
        async_to_sync(layer.group_discard)(GROUP, channel)

    assert [(m["type"], m["event"]) for m in received] == [
        ("job.event", "log"),
        ("job.event", "status"),
    ]


def test_a_lost_connection_is_made_again_at_the_next_look():
    events._push_loop.watched(GROUP)
    for sizes in events._push_loop._groups.values():
        sizes._connection.disconnect()  # as a Redis restart leaves it

    assert events._push_loop.watched(GROUP) is False


def test_an_unreachable_redis_costs_the_push_not_the_caller(caplog, monkeypatch):
    def unreachable(group):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(events._push_loop, "watched", unreachable)
    with caplog.at_level(logging.WARNING, logger="buildhub.jobs"):
        events.push("some-job", {"event": "status"})

    assert "could not push status for job some-job" in caplog.text
