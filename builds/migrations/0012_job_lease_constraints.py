"""The engine's lease invariants, kept by the database: a running job is held by a worker
under a lease (worker, token and expiry); any other job by nobody. 0011 settled the rows
that broke them."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0011_job_lease_held_only_while_running"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "running"), _negated=True),
                    models.Q(
                        ("lease_expires_at__isnull", False),
                        ("lease_token__isnull", False),
                        ("worker__isnull", False),
                    ),
                    _connector="OR",
                ),
                name="job_running_has_worker_and_lease",
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status", "running"),
                    models.Q(
                        ("lease_expires_at__isnull", True),
                        ("lease_token__isnull", True),
                        ("worker__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="job_not_running_has_no_worker_or_lease",
            ),
        ),
    ]
