"""The engine's hot statements: run as prepared statements, their rows built into Jobs.

On PostgreSQL each statement is prepared once per connection (server-side binding): the
server parses and plans it once instead of on every call, and the driver sends the values
apart instead of quoting them into the text. The rows become Job instances as
``Job.objects.raw`` builds them, with the plan of which column feeds which field (and which
converters apply) made once per statement instead of on every call.
"""

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from buildhub.internals import column_converters, convert_row, prepared_cursor
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
        _plans[key] = (names, positions, extras, column_converters(Job, db, columns))
    return _plans[key]


def _cursor(db):
    """On PostgreSQL a cursor whose statements are prepared (unless JOB_PREPARED_STATEMENTS
    is off), wrapped as Django wraps its own (query logging and counting see it);
    elsewhere Django's cursor."""
    if db.vendor != "postgresql" or not settings.JOB_PREPARED_STATEMENTS:
        return db.cursor()
    return prepared_cursor(db)


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
        convert_row(values, converters, db)
        job = Job.from_db(db.alias, names, [values[position] for position in positions])
        for column, position in extras:
            setattr(job, column, values[position])
        jobs.append(job)
    return jobs
