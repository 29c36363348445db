"""The engine's hot statements: run as prepared statements, their rows built into Jobs.

On PostgreSQL each statement is prepared once per connection (server-side binding): the
server parses and plans it once instead of on every call, and the driver sends the values
apart instead of quoting them into the text. The rows become Job instances as
``Job.objects.raw`` builds them, with the plan of which column feeds which field (and which
converters apply) made once per statement instead of on every call.
"""

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query

from builds.models import Job

_plans: dict[tuple, tuple] = {}


def _plan(db, sql: str, cursor) -> tuple:
    """Field names and positions to build a Job from, the converters of each position and
    the extra columns to set as attributes (the cursor's description is read only to make
    it: the driver builds it anew on every call)."""
    key = (db.alias, db.vendor, sql)
    if key not in _plans:
        columns = [column[0] for column in cursor.description]
        fields_by_column = {field.column: field for field in Job._meta.concrete_fields}
        position_of = {column: position for position, column in enumerate(columns)}
        # Model.from_db takes the values in the model's field order.
        returned = [f for f in Job._meta.concrete_fields if f.column in position_of]
        names = [field.attname for field in returned]
        if Job._meta.pk.attname not in names:
            raise ValueError("the statement must return the job's primary key")
        positions = [position_of[field.column] for field in returned]
        extras = [(c, p) for c, p in position_of.items() if c not in fields_by_column]
        cols = [
            fields_by_column[column].get_col(Job._meta.db_table)
            if column in fields_by_column
            else None
            for column in columns
        ]
        compiler = SQLCompiler(Query(Job), db, db.alias)
        # get_converters skips the None of a column that is no field; its stubs want none.
        converters = compiler.get_converters(cols)  # type: ignore[arg-type]
        _plans[key] = (names, positions, extras, converters)
    return _plans[key]


def _prepared_cursor_class():
    # psycopg 3's server-side binding cursor, as Django's backend exports it (not in its stubs).
    from django.db.backends.postgresql.base import (  # type: ignore[attr-defined]
        ServerBindingCursor,
    )

    class PreparedCursor(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    return PreparedCursor


_PreparedCursor = None
# psycopg prepares nothing while a connection's threshold is None, even when asked; with
# this one it prepares only the statements that ask (Django's own cursors never do).
ONLY_WHEN_ASKED = 2**31 - 1


def _cursor(db):
    """On PostgreSQL a cursor whose statements are prepared (unless JOB_PREPARED_STATEMENTS
    is off), wrapped as Django wraps its own (query logging and counting see it);
    elsewhere Django's cursor."""
    global _PreparedCursor
    if db.vendor != "postgresql" or not settings.JOB_PREPARED_STATEMENTS:
        return db.cursor()
    db.cursor().close()  # Django's checks: connected, healthy, right thread
    if _PreparedCursor is None:
        _PreparedCursor = _prepared_cursor_class()
    driver = db.connection
    if driver.prepare_threshold is None:  # Django's default: nothing prepared by itself
        driver.prepare_threshold = ONLY_WHEN_ASKED
    prepared = _PreparedCursor(driver)
    return db.make_debug_cursor(prepared) if db.queries_logged else db.make_cursor(prepared)


def fetch_jobs(sql: str, params) -> list[Job]:
    """Run ``sql`` (rows of builds_job, perhaps with extra columns) on this connection."""
    db = connections[DEFAULT_DB_ALIAS]  # this thread's, looked up once
    with _cursor(db) as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        if not rows:
            return []
        names, positions, extras, converters = _plan(db, sql, cursor)
    jobs = []
    for row in rows:
        values = list(row)
        for position, (converter_list, expression) in converters.items():
            for converter in converter_list:
                values[position] = converter(values[position], expression, db)
        job = Job.from_db(db.alias, names, [values[position] for position in positions])
        for column, position in extras:
            setattr(job, column, values[position])
        jobs.append(job)
    return jobs
