"""Retention, and vacuum and statistics of the job tables that follow the work, not their size.

job_finished (finished_at, id), written once per job when it finishes, gives the retention
sweep (builds.retention) its batches oldest first, and the dashboard its last hours, without
reading the table.

On PostgreSQL, autovacuum waits by default for dead rows worth 20 % of a table. On a job table with a
million finished jobs that is 200,000 dead rows (about 67,000 no-op jobs: the claim and the
finish each leave one), and meanwhile every claim's index-only scan of
job_queued_claim_order walks over the entries of the jobs claimed before it and fetches
their heap rows: measured on a 1,000,000-job table, 3 buffers per candidate search after a
vacuum, 16 after 2,000 claims, 78 (82 heap fetches) after 12,000; a vacuum brings it back
to 3 (docs/retention.md). So builds_job is vacuumed after 5,000 dead rows whatever its
size, always with its indexes (under 2 % of pages with dead rows PostgreSQL would skip
them, and leave those entries), and analysed after 20,000 changes: about 0.2 s per vacuum
on that table.

builds_joblog only grows, until the retention sweep deletes a day's lines at once: its
dead rows are reclaimed after 2 % of the table instead of 20 %.
"""

from django.db import migrations, models

JOB = (
    "ALTER TABLE builds_job SET (autovacuum_vacuum_scale_factor = 0, "
    "autovacuum_vacuum_threshold = 5000, vacuum_index_cleanup = on, "
    "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000)"
)
JOB_RESET = (
    "ALTER TABLE builds_job RESET (autovacuum_vacuum_scale_factor, "
    "autovacuum_vacuum_threshold, vacuum_index_cleanup, autovacuum_analyze_scale_factor, "
    "autovacuum_analyze_threshold)"
)
LOG = "ALTER TABLE builds_joblog SET (autovacuum_vacuum_scale_factor = 0.02)"
LOG_RESET = "ALTER TABLE builds_joblog RESET (autovacuum_vacuum_scale_factor)"


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(JOB)
        schema_editor.execute(LOG)


def untune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(JOB_RESET)
        schema_editor.execute(LOG_RESET)


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0009_drop_updates_read_scope"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at", "id"],
                name="job_finished",
            ),
        ),
        migrations.RunPython(tune, untune),
    ]
