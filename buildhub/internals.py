"""The few places where BuildHub reaches into another library's private parts.

Each use sits behind one function here, and tests/buildhub/test_internals.py checks each
against the installed version: an upgrade that changes one fails there, by name, instead of
quietly in a hot path (a push that never reaches a websocket, a job row built wrong, a
release manifest written under the wrong key, tickets sent through a stale broker).
"""

from typing import NamedTuple

from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query
from django_q.conf import Conf

# --- channels_redis ------------------------------------------------------------------------


class GroupLocation(NamedTuple):
    host_index: int  # which of the layer's hosts holds the group
    key: bytes  # the sorted set of the group's channels on that host


def channel_group_location(layer, group: str) -> GroupLocation:
    """Where a ``channels_redis`` RedisChannelLayer keeps the members of ``group``: the index
    of its host (``layer.hosts[host_index]``) and the key of the group's sorted set there (private:
    ``RedisChannelLayer._group_key``)."""
    return GroupLocation(layer.consistent_hash(group), layer._group_key(group))


# --- Django's SQL compiler -----------------------------------------------------------------


def column_converters(model, db, columns: list[str]) -> dict:
    """The converters the ORM applies to the values of a row of ``model``'s table whose
    columns are ``columns`` (the backend's, then each field's ``from_db_value``), by position:
    ``{position: ([converter, ...], expression)}``. Columns that are no field get none. Made
    by Django's SQLCompiler, which has no public way to ask for them."""
    fields_by_column = {field.column: field for field in model._meta.concrete_fields}
    expressions = [
        fields_by_column[column].get_col(model._meta.db_table)
        if column in fields_by_column
        else None
        for column in columns
    ]
    compiler = SQLCompiler(Query(model), db, db.alias)
    # get_converters skips the None of a column that is no field; its stubs want none.
    return compiler.get_converters(expressions)  # type: ignore[arg-type]


def convert_row(values: list, converters: dict, db) -> None:
    """Apply ``column_converters``' converters to one row's ``values``, in place, with the
    arguments SQLCompiler.apply_converters gives them."""
    for position, (converter_list, expression) in converters.items():
        for converter in converter_list:
            values[position] = converter(values[position], expression, db)


# --- Django's PostgreSQL cursors -----------------------------------------------------------

# psycopg prepares nothing while a connection's threshold is None, even when asked; with
# this one it prepares only the statements that ask (Django's own cursors never do).
ONLY_WHEN_ASKED = 2**31 - 1

_PreparedCursor = None


def _prepared_cursor_class():
    # Deferred: the PostgreSQL backend module loads the psycopg driver, which the embedded
    # default (SQLite) never needs; only a PostgreSQL connection gets here.
    # psycopg 3's server-side binding cursor, as Django's backend exports it (not in its stubs).
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    return PreparedCursor


def prepared_cursor(db):
    """A cursor on PostgreSQL connection ``db`` whose statements are prepared on the server
    (psycopg's ServerBindingCursor, asked to prepare every statement), wrapped as Django wraps
    its own so that query logging and counting see it (private: the wrapper's
    ``connection``, ``queries_logged``, ``make_debug_cursor`` and ``make_cursor``)."""
    global _PreparedCursor
    db.cursor().close()  # Django's checks: connected, healthy, right thread
    if _PreparedCursor is None:
        _PreparedCursor = _prepared_cursor_class()
    driver = db.connection
    if driver.prepare_threshold is None:  # Django's default: nothing prepared by itself
        driver.prepare_threshold = ONLY_WHEN_ASKED
    prepared = _PreparedCursor(driver)
    return db.make_debug_cursor(prepared) if db.queries_logged else db.make_cursor(prepared)


# --- django-storages -----------------------------------------------------------------------


def s3_object_key(storage, name: str) -> str:
    """The bucket key under which an S3Storage keeps ``name`` (its ``location`` prefix
    joined, ``..`` refused with SuspiciousOperation): private ``S3Storage._normalize_name``."""
    return storage._normalize_name(name)


# --- django-q2 -----------------------------------------------------------------------------


def django_q_redis_settings():
    """The Redis connection settings django-q2's broker is made with (``Conf.REDIS``, read
    from ``Q_CLUSTER["redis"]`` when django-q2 is imported; tests may change it)."""
    return Conf.REDIS
