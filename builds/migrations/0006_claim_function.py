"""PostgreSQL: the claim as one server-side function (builds.engine.claim).

The same steps as the ORM claim, in one round trip instead of seven: refuse a worker that
is draining, advance the shared
fairness cursor (its row lock orders all claims until the transaction ends), find the
accounts whose running jobs fill their concurrency limit, take the first eligible queued
job of each class in the slot's serve order with SKIP LOCKED, and mark it running with a
new lease. When nothing is eligible the cursor goes back, as the ORM claim's rollback does.
Tier limits and the cycle come from the caller, so the Python settings stay the one source.
"""

from django.db import migrations

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
LANGUAGE plpgsql AS $$
DECLARE
    slot bigint;
    wanted text;
    serve_order text[];
    class text;
    at_limit bigint[];
    picked uuid;
BEGIN
    IF EXISTS (SELECT 1 FROM builds_worker WHERE id = p_worker AND state = 'draining') THEN
        RETURN;  -- a stopping worker takes nothing more
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
        -- Nothing to claim: the slot goes back, and this commit need not wait for the disk
        -- (if a crash lost it, the slot would be back anyway).
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

DROP = (
    "DROP FUNCTION IF EXISTS "
    "buildhub_claim_job(text, uuid, integer, text[], text[], text[], integer[], text)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("builds", "0005_job_state_seq")]

    operations = [migrations.RunPython(create, drop)]
