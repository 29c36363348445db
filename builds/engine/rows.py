"""Job rows from the engine's own SQL as Job instances, as ``Job.objects.raw`` builds them.

``raw`` works out again on every call which column feeds which field and which converters
apply (about a tenth of a millisecond for the job table's 26 columns). The engine's hot
statements always return the same columns, so that plan is made once per column list.
"""

from django.db import connection
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query

from builds.models import Job

_plans: dict[tuple, tuple] = {}


def _plan(columns: tuple[str, ...]) -> tuple:
    """Field names and positions to build a Job from, the converters of each position and
    the extra columns to set as attributes."""
    key = (connection.alias, connection.vendor, columns)
    if key not in _plans:
        fields_by_column = {field.column: field for field in Job._meta.concrete_fields}
        position_of = {column: position for position, column in enumerate(columns)}
        # Model.from_db takes the values in the model's field order.
        returned = [f for f in Job._meta.concrete_fields if f.column in position_of]
        names = [field.attname for field in returned]
        positions = [position_of[field.column] for field in returned]
        extras = [(c, p) for c, p in position_of.items() if c not in fields_by_column]
        if Job._meta.pk.attname not in names:
            raise ValueError("the statement must return the job's primary key")
        cols = [
            fields_by_column[column].get_col(Job._meta.db_table)
            if column in fields_by_column
            else None
            for column in columns
        ]
        compiler = SQLCompiler(Query(Job), connection, connection.alias)
        _plans[key] = (names, positions, extras, compiler.get_converters(cols))
    return _plans[key]


def fetch_jobs(sql: str, params) -> list[Job]:
    """Run ``sql`` (rows of builds_job, perhaps with extra columns) on this connection."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        columns = tuple(column[0] for column in cursor.description)
    if not rows:
        return []
    names, positions, extras, converters = _plan(columns)
    jobs = []
    for row in rows:
        values = list(row)
        for position, (converter_list, expression) in converters.items():
            for converter in converter_list:
                values[position] = converter(values[position], expression, connection)
        job = Job.from_db(connection.alias, names, [values[position] for position in positions])
        for column, position in extras:
            setattr(job, column, values[position])
        jobs.append(job)
    return jobs
