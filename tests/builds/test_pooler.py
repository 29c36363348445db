"""Behind PgBouncer in transaction mode (``make test-pgbouncer``, which runs these with the
engine, claim and API tests): the pooler is really in the path, and claims and finishes
stay exact with more client connections than server connections."""

import os
import threading
from collections import Counter

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.claim import claim_next_job
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account
from tests.support.pgbouncer import ADMIN_URL_ENV, POOL_SIZE_ENV, admin_console

ADMIN_URL = os.environ.get(ADMIN_URL_ENV, "")

pytestmark = [
    pytest.mark.skipif(not ADMIN_URL, reason="runs behind PgBouncer: make test-pgbouncer"),
    pytest.mark.django_db(transaction=True),
]


def console(command: str) -> list[dict]:
    return admin_console(ADMIN_URL, command)


def database() -> str:
    return connection.settings_dict["NAME"]


def clients_of_this_database() -> int:
    return sum(1 for client in console("SHOW CLIENTS") if client["database"] == database())


def server_backends() -> int:
    """This database's backends as PostgreSQL counts them (asked directly, not pooled)."""
    pool = next(row for row in console("SHOW DATABASES") if row["name"] == database())
    server = {"host": pool["host"], "port": pool["port"], "user": connection.settings_dict["USER"]}
    with psycopg.connect(**server, dbname="postgres", autocommit=True) as direct:
        return direct.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database()]
        ).fetchone()[0]


def test_the_test_database_is_reached_through_the_pooler_in_transaction_mode():
    connection.ensure_connection()

    pools = [pool for pool in console("SHOW POOLS") if pool["database"] == database()]

    assert [pool["pool_mode"] for pool in pools] == ["transaction"]
    assert clients_of_this_database() >= 1  # this test's own connection
    assert settings.DATABASE_POOLER == "transaction"
    assert connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert settings.JOB_PREPARED_STATEMENTS is False


def test_more_clients_than_server_connections_claim_and_finish_every_job_once():
    pool_size = int(os.environ[POOL_SIZE_ENV])
    client_count = 3 * pool_size
    worker("pooled-worker", processes=client_count)
    # Four enterprise accounts may run 20 jobs at once: no client waits on a concurrency cap.
    accounts = [make_account("enterprise", f"Pooled {number}") for number in range(4)]
    jobs = [job for account in accounts for job in queue_jobs(account, 15)]
    connected = threading.Barrier(client_count + 1)
    measured = threading.Event()
    finished_by: Counter = Counter()
    errors: list[BaseException] = []

    def claim_and_finish_until_the_queue_is_empty(client: int):
        try:
            connection.ensure_connection()  # this thread's own client connection
            connected.wait()
            measured.wait()
            while True:
                job = claim_next_job("pooled-worker")
                if job is None:
                    if not Job.objects.filter(status=JobStatus.QUEUED).exists():
                        return
                    continue
                lifecycle.succeed_job(job.pk, job.lease_token)
                finished_by[job.pk] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
            connected.abort()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=claim_and_finish_until_the_queue_is_empty, args=(n,))
        for n in range(client_count)
    ]
    for thread in threads:
        thread.start()
    backends_while_claiming: list[int] = []
    try:
        connected.wait(timeout=60)
        clients, backends = clients_of_this_database(), server_backends()
    finally:
        measured.set()
        while any(thread.is_alive() for thread in threads):
            backends_while_claiming.append(server_backends())
        for thread in threads:
            thread.join(timeout=120)

    assert not errors
    assert clients > client_count  # the threads' connections and this test's own
    assert backends <= pool_size  # PostgreSQL sees only the pool's server connections
    assert backends_while_claiming and max(backends_while_claiming) <= pool_size
    statuses = Counter(
        Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )
    assert statuses == {JobStatus.SUCCEEDED: len(jobs)}
    assert set(finished_by) == {job.pk for job in jobs}
    assert set(finished_by.values()) == {1}  # no job was claimed or finished twice
    attempts = set(
        Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("attempts", flat=True)
    )
    assert attempts == {1}
