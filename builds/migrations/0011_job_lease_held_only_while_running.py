"""Before the lease constraints (0012): rows that break them are settled first.

A running job must be held by a worker under a lease; any other job by nobody. A running
row without its worker or its lease (a worker row deleted by hand while it ran, or a row
edited by hand) could never be reaped, so it is ended as the reaper ends a job whose worker
vanished: queued again while attempts remain (the reconciler sends its ticket), else failed.
Any other row that still names a worker or a lease has them cleared: nothing reads them.
"""

from django.db import migrations
from django.db.models import F, Q
from django.db.models.functions import Now

WORKER_LOST = "worker lost: its lease expired before the job finished"
NO_LEASE = {"worker": None, "lease_token": None, "lease_expires_at": None}


def settle_leases(apps, schema_editor):
    Job = apps.get_model("builds", "Job")
    unheld = Job.objects.filter(status="running").filter(
        Q(worker__isnull=True) | Q(lease_token__isnull=True) | Q(lease_expires_at__isnull=True)
    )
    unheld.filter(attempts__lt=F("max_attempts")).update(
        status="queued",
        not_before=None,
        error=WORKER_LOST,
        stage="Worker lost; waiting for another",
        state_seq=F("state_seq") + 1,
        **NO_LEASE,
    )
    unheld.update(
        status="failed",
        error=WORKER_LOST,
        finished_at=Now(),
        state_seq=F("state_seq") + 1,
        **NO_LEASE,
    )
    Job.objects.exclude(status="running").filter(
        Q(worker__isnull=False) | Q(lease_token__isnull=False) | Q(lease_expires_at__isnull=False)
    ).update(**NO_LEASE)


class Migration(migrations.Migration):
    dependencies = [("builds", "0010_job_retention")]

    operations = [migrations.RunPython(settle_leases, migrations.RunPython.noop)]
