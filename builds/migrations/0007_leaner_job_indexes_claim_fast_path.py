"""Fewer indexes on jobs, and a claim that does less when it can (builds.engine.claim).

Every claim and finish changes a job's status, so PostgreSQL writes an entry into every
index of the job table for it: the account's and the worker's own indexes (the account's
is the start of job_account_recent; the worker is looked up only among running jobs) and
the lease index (the reaper reads the few running jobs through job_running_by_account)
go, as does the log's own job index (the start of joblog_unique_job_seq). The claim's
order ends with the job's id, so the queued index now holds the whole order: the claim's
scan stops at the first job it may take instead of sorting the class's oldest ones.

The claim function (0006) now
- returns at once, without taking a fairness slot or writing anything, when no queued job
  could start (the query a ticket made before its first claim);
- refuses a draining worker with SQLSTATE BH001 when jobs wait, so the ticket is handed on;
- reads with index scans only: an index scan marks the entries of jobs that finished as
  dead as it passes them, a bitmap scan reads them all again on every claim until vacuum.
"""

import importlib

import django.db.models.deletion

from django.db import migrations, models

CREATE = r"""
CREATE OR REPLACE FUNCTION buildhub_claim_job(
    p_worker text,
    p_lease_token uuid,
    p_lease_seconds integer,
    p_cycle text[],
    p_ranks text[],
    p_tiers text[],
    p_tier_limits integer[],
    p_enterprise text
) RETURNS SETOF builds_job
LANGUAGE plpgsql
SET enable_bitmapscan = off
AS $$
DECLARE
    slot bigint;
    wanted text;
    serve_order text[];
    class text;
    at_limit bigint[];
    picked uuid;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM builds_job job JOIN builds_account account ON account.id = job.account_id
        WHERE job.status = 'queued' AND NOT account.blocked
          AND (job.not_before IS NULL OR job.not_before <= now())
    ) THEN
        RETURN;  -- nothing could start: no slot taken, nothing written
    END IF;
    IF EXISTS (SELECT 1 FROM builds_worker WHERE id = p_worker AND state = 'draining') THEN
        RAISE EXCEPTION 'worker % is draining', p_worker USING ERRCODE = 'BH001';
    END IF;
    UPDATE builds_fairnesscursor SET position = position + 1 WHERE id = 1
        RETURNING position - 1 INTO slot;
    IF slot IS NULL THEN  -- a database set up without the migration's row
        INSERT INTO builds_fairnesscursor (id, position) VALUES (1, 0) ON CONFLICT DO NOTHING;
        UPDATE builds_fairnesscursor SET position = position + 1 WHERE id = 1
            RETURNING position - 1 INTO slot;
    END IF;
    wanted := p_cycle[mod(slot, array_length(p_cycle, 1)) + 1];
    serve_order := ARRAY[wanted] || array_remove(p_ranks, wanted);

    SELECT coalesce(array_agg(running.account_id), '{}') INTO at_limit
    FROM (
        SELECT job.account_id
        FROM builds_job job
        JOIN builds_account account ON account.id = job.account_id
        LEFT JOIN builds_enterpriselimit contract
            ON contract.account_id = account.id AND account.tier = p_enterprise
        WHERE job.status = 'running'
        GROUP BY job.account_id, account.tier, contract.max_concurrent_builds
        HAVING count(*) >= coalesce(
            nullif(contract.max_concurrent_builds, 0),
            p_tier_limits[array_position(p_tiers, account.tier::text)]
        )
    ) running;

    FOREACH class IN ARRAY serve_order LOOP
        SELECT job.id INTO picked
        FROM builds_job job
        JOIN builds_account account ON account.id = job.account_id
        WHERE job.status = 'queued'
          AND job.priority_class = class
          AND NOT account.blocked
          AND (job.not_before IS NULL OR job.not_before <= now())
          AND NOT (job.account_id = ANY (at_limit))
        ORDER BY job.run_now DESC, job.created_at, job.id
        LIMIT 1
        FOR UPDATE OF job SKIP LOCKED;
        EXIT WHEN picked IS NOT NULL;
    END LOOP;

    IF picked IS NULL THEN
        -- Nothing to claim (accounts at their limit, rows locked by other claims): the slot
        -- goes back, and this commit need not wait for the disk (if a crash lost it, the
        -- slot would be back anyway).
        UPDATE builds_fairnesscursor SET position = position - 1 WHERE id = 1;
        PERFORM set_config('synchronous_commit', 'off', true);
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE builds_job SET
        status = 'running',
        worker_id = p_worker,
        lease_token = p_lease_token,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        started_at = now(),
        attempts = attempts + 1,
        cancel_requested_at = NULL,
        run_now = false,
        stage = 'Starting',
        state_seq = state_seq + 1
    WHERE id = picked AND status = 'queued'
    RETURNING *;
END;
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        previous = importlib.import_module("builds.migrations.0006_claim_function")
        schema_editor.execute(previous.DROP, params=None)
        schema_editor.execute(previous.CREATE, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0006_claim_function"),
    ]

    operations = [
        migrations.RunPython(create, restore),
        migrations.RemoveIndex(
            model_name="job",
            name="job_running_lease",
        ),
        migrations.RemoveIndex(
            model_name="job",
            name="job_queued_claim_order",
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                models.F("priority_class"),
                models.OrderBy(models.F("run_now"), descending=True),
                models.F("created_at"),
                models.F("id"),
                condition=models.Q(("status", "queued")),
                name="job_queued_claim_order",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="account",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="jobs",
                to="builds.account",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="worker",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="jobs",
                to="builds.worker",
            ),
        ),
        migrations.AlterField(
            model_name="joblog",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="logs",
                to="builds.job",
            ),
        ),
    ]
