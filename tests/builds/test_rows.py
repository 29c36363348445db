"""The engine's rows-to-jobs path builds the same Job as Job.objects.raw."""

import pytest
from django.db import connection

from builds.engine.rows import fetch_jobs
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs

SQL = "SELECT *, 'acme' AS account_slug FROM builds_job WHERE id = %s"


def fields(job: Job) -> dict:
    return {field.attname: getattr(job, field.attname) for field in Job._meta.concrete_fields}


def test_a_job_row_becomes_the_job_raw_would_build(pro_account):
    job = queue_jobs(pro_account, 1, kind="diagnostic.noop", params={"seconds": 1, "steps": [2]})[0]
    Job.objects.filter(pk=job.pk).update(result={"ok": True})

    pk = Job._meta.pk.get_db_prep_value(job.pk, connection)

    fetched = fetch_jobs(SQL, [pk])
    again = fetch_jobs(SQL, [pk])  # the plan made by the first call
    raw = next(iter(Job.objects.raw(SQL, [pk])))

    assert len(fetched) == 1 and len(again) == 1
    assert fields(fetched[0]) == fields(raw) == fields(again[0])
    assert fields(fetched[0]) == fields(Job.objects.get(pk=job.pk))
    assert fetched[0].params == {"seconds": 1, "steps": [2]}  # JSON decoded
    assert fetched[0].result == {"ok": True}
    assert fetched[0].account_slug == "acme"  # a column that is no field: an attribute
    assert fetched[0]._state.adding is False  # a row from the database, as raw makes it


def test_no_row_is_no_job(db):
    assert fetch_jobs("SELECT * FROM builds_job WHERE 1 = 0", []) == []


def test_a_statement_without_the_primary_key_is_refused(pro_account):
    queue_jobs(pro_account, 1)
    with pytest.raises(ValueError, match="primary key"):
        fetch_jobs("SELECT kind, status FROM builds_job", [])


def prepared_like(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [sql[:20] + "%"]
        )
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements")
def test_on_postgresql_the_statement_is_prepared_once_per_connection(pro_account):
    job = queue_jobs(pro_account, 1)[0]
    before = prepared_like(SQL)

    for _ in range(3):
        assert fetch_jobs(SQL, [job.pk])[0].pk == job.pk

    assert prepared_like(SQL) == before + 1  # the server parsed and planned it once


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements")
def test_prepared_statements_can_be_turned_off_for_a_pooler(pro_account, settings):
    settings.JOB_PREPARED_STATEMENTS = False
    job = queue_jobs(pro_account, 1)[0]
    sql = SQL.replace("'acme'", "'other'")

    assert fetch_jobs(sql, [job.pk])[0].account_slug == "other"

    assert prepared_like(sql) == 0
