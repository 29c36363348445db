"""The engine's diagnostic job kinds."""

import pytest

from buildhub.errors import ServiceError
from builds.choices import JobStatus
from builds.engine.runner import run_next_job
from builds.engine.submit import submit_job
from builds.models import Job
from tests.builds.engine_helpers import worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_noop_job_runs_through_the_engine_and_succeeds(enterprise_account):
    worker()
    job, _ = submit_job(enterprise_account, "diagnostic.noop", {}, staff=True)

    assert run_next_job() == str(job.pk)

    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.progress, job.result, job.attempts) == (JobStatus.SUCCEEDED, 100, {}, 1)
    assert job.logs.count() == 1  # the attempt line


def test_noop_jobs_are_for_staff_only(enterprise_account):
    with pytest.raises(ServiceError, match="for staff only"):
        submit_job(enterprise_account, "diagnostic.noop", {})
