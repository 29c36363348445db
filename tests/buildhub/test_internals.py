"""The private parts of other libraries that BuildHub relies on (buildhub.internals) still
behave as it expects with the installed versions. A failure here after an upgrade names the
use that broke; fix its function in buildhub/internals.py."""

import uuid

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from channels_redis.core import RedisChannelLayer
from django.core.exceptions import SuspiciousOperation
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.brokers import get_broker
from django_q.conf import Conf
from storages.backends.s3 import S3Storage

from buildhub.internals import (
    channel_group_location,
    column_converters,
    convert_row,
    django_q_redis_settings,
    prepared_cursor,
    s3_object_key,
)
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs


def test_a_channel_group_is_the_sorted_set_of_its_channels_where_channels_redis_keeps_it():
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    assert isinstance(layer, RedisChannelLayer)
    group = f"job.{uuid.uuid4()}"
    where = channel_group_location(layer, group)
    host = dict(layer.hosts[where.host_index])
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(host.pop("address"), **host))

    async def join_then_leave():
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        members_while_joined = client.zcard(where.key)
        await layer.group_discard(group, channel)
        return members_while_joined

    try:
        assert isinstance(where.key, bytes)
        assert async_to_sync(join_then_leave)() == 1
        assert client.zcard(where.key) == 0
    finally:
        client.close()


@pytest.mark.django_db
def test_the_orms_converters_turn_a_raw_job_row_into_the_jobs_field_values(pro_account):
    job = queue_jobs(pro_account, 1, kind="diagnostic.noop", params={"steps": [1, 2]})[0]
    stored = Job.objects.get(pk=job.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, params, created_at, 'extra' AS note FROM builds_job WHERE id = %s",
            [Job._meta.pk.get_db_prep_value(job.pk, connection)],
        )
        row = list(cursor.fetchone())
        columns = [column[0] for column in cursor.description]

    converters = column_converters(Job, connection, columns)
    convert_row(row, converters, connection)

    assert 1 in converters  # the JSON field's from_db_value, on every backend
    assert 3 not in converters  # no field, no converter
    assert row == [stored.pk, {"steps": [1, 2]}, stored.created_at, "extra"]


@pytest.mark.django_db
def test_a_prepared_cursor_prepares_on_the_server_and_its_queries_are_counted():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are used on PostgreSQL only")
    marker = f"prepared_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT %s::int + 1 AS {marker}"

    with CaptureQueriesContext(connection) as captured, prepared_cursor(connection) as cursor:
        cursor.execute(sql, [1])
        assert cursor.fetchone() == (2,)
    with prepared_cursor(connection) as cursor:  # not logged: Django's plain wrapper
        cursor.execute(sql, [2])
        assert cursor.fetchone() == (3,)

    assert len(captured.captured_queries) == 1  # counted as Django counts its own
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{marker}%"],
        )
        assert cursor.fetchone() == (1,)  # prepared once on this connection, used twice


def test_an_s3_object_key_is_the_name_under_the_storages_location():
    storage = S3Storage(bucket_name="buildhub-test", location="public")

    assert s3_object_key(storage, "apps/1/release.json") == "public/apps/1/release.json"
    with pytest.raises(SuspiciousOperation):
        s3_object_key(storage, "../private/secret.map")


def test_django_q_makes_its_broker_from_the_redis_settings_read_here(settings, monkeypatch):
    assert django_q_redis_settings() == settings.Q_CLUSTER["redis"]

    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:6379/7")

    assert django_q_redis_settings() == "redis://127.0.0.1:6379/7"
    broker = get_broker()
    assert broker.connection.connection_pool.connection_kwargs["db"] == 7
