import datetime as dt

import pytest
from django.core.cache import cache
from django.core.files.storage import storages
from django.core.management import call_command
from django.utils import timezone

from abuse.choices import SignalKind
from abuse.models import AbuseSignal
from builds import registry, retention
from builds.choices import JobStatus, LogLevel
from builds.engine.logs import append_logs
from builds.models import Job, JobLog
from tests.builds.engine_helpers import held_lease, queue_jobs

pytestmark = pytest.mark.django_db

JOBS = "/api/v1/jobs/"


@pytest.fixture(autouse=True)
def private_storage(settings, tmp_path, clear_cache):
    settings.STORAGES = {
        **settings.STORAGES,
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "private", "base_url": None},
        },
    }
    settings.JOB_RETENTION_DAYS = 90
    settings.JOB_ARCHIVE = True
    return tmp_path / "private"


def finished(account, days_ago, count=1, status=JobStatus.SUCCEEDED, lines=2, **changes):
    """``count`` jobs that finished ``days_ago`` days ago, each with ``lines`` log lines."""
    jobs = queue_jobs(account, count)
    when = timezone.now() - dt.timedelta(days=days_ago)
    for number, job in enumerate(jobs):
        append_logs(
            job.pk,
            [(when, LogLevel.INFO, f"line {seq} of job {number}") for seq in range(1, lines + 1)],
        )
        Job.objects.filter(pk=job.pk).update(
            status=status,
            finished_at=when + dt.timedelta(seconds=number),
            started_at=when,
            result={"ok": True},
            **changes,
        )
    return jobs


def archived_documents():
    documents = []
    for key in sorted(archive_keys()):
        documents.extend(retention.read_archive(key))
    return documents


def archive_keys(prefix=retention.ARCHIVE_PREFIX):
    storage = storages["private"]
    if not storage.exists(prefix):
        return []
    folders, files = storage.listdir(prefix)
    keys = [f"{prefix}/{name}" for name in files]
    for folder in folders:
        keys.extend(archive_keys(f"{prefix}/{folder}"))
    return keys


def test_old_finished_jobs_and_their_logs_are_archived_then_deleted(pro_account):
    old = finished(pro_account, days_ago=100, count=3)
    recent = finished(pro_account, days_ago=10)
    queued_long_ago = queue_jobs(pro_account, 1)
    Job.objects.filter(pk=queued_long_ago[0].pk).update(
        created_at=timezone.now() - dt.timedelta(days=200)
    )

    result = retention.sweep_jobs()

    assert (result.jobs_deleted, result.logs_deleted, result.batches) == (3, 6, 1)
    remaining = set(Job.objects.values_list("pk", flat=True))
    assert remaining == {recent[0].pk, queued_long_ago[0].pk}
    assert not JobLog.objects.filter(job_id__in=[job.pk for job in old]).exists()
    assert JobLog.objects.filter(job=recent[0]).count() == 2
    documents = archived_documents()  # every field and every log line, in order
    assert [document["job"]["id"] for document in documents] == [str(job.pk) for job in old]
    assert documents[0]["job"]["status"] == "succeeded"
    assert documents[0]["job"]["result"] == {"ok": True}
    assert documents[0]["job"]["account_id"] == pro_account.pk
    assert {f.attname for f in Job._meta.concrete_fields} == set(documents[0]["job"])
    assert [line["message"] for line in documents[2]["logs"]] == [
        "line 1 of job 2",
        "line 2 of job 2",
    ]
    assert [line["seq"] for line in documents[2]["logs"]] == [1, 2]
    day = (timezone.now() - dt.timedelta(days=100)).strftime("%Y/%m/%d")
    assert result.archives == [f"archives/jobs/{day}/{old[0].pk}-{old[-1].pk}.jsonl.gz"]


def test_every_finished_state_goes_and_nothing_unfinished(pro_account):
    for status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT):
        finished(pro_account, days_ago=91, status=status)
    running = finished(pro_account, days_ago=91, status=JobStatus.RUNNING, **held_lease())  # stale

    assert retention.sweep_jobs().jobs_deleted == 3
    assert list(Job.objects.values_list("pk", flat=True)) == [running[0].pk]


def test_batches_are_small_and_each_has_its_archive(pro_account):
    jobs = finished(pro_account, days_ago=120, count=5, lines=1)

    result = retention.sweep_jobs(batch_size=2)

    assert (result.jobs_deleted, result.batches, len(result.archives)) == (5, 3, 3)
    in_archives = [retention.read_archive(key) for key in result.archives]
    assert [len(documents) for documents in in_archives] == [2, 2, 1]
    assert [document["job"]["id"] for documents in in_archives for document in documents] == [
        str(job.pk) for job in jobs
    ]


def test_a_second_sweep_finds_nothing_and_writes_nothing(pro_account):
    finished(pro_account, days_ago=100, count=2)
    retention.sweep_jobs()
    keys = archive_keys()

    again = retention.sweep_jobs()

    assert (again.jobs_deleted, again.batches, again.archives) == (0, 0, [])
    assert archive_keys() == keys


def test_retention_zero_keeps_everything_and_archive_can_be_off(pro_account, settings):
    finished(pro_account, days_ago=1000)
    settings.JOB_RETENTION_DAYS = 0
    assert retention.sweep_jobs().jobs_deleted == 0
    assert Job.objects.count() == 1

    settings.JOB_RETENTION_DAYS = 90
    settings.JOB_ARCHIVE = False
    result = retention.sweep_jobs()

    assert (result.jobs_deleted, result.archives) == (1, [])
    assert archive_keys() == []


def test_a_job_retried_after_it_was_archived_is_not_deleted(pro_account):
    job = finished(pro_account, days_ago=100, status=JobStatus.FAILED)[0]
    before = retention.cutoff(90)
    batch = retention.old_jobs(before, None, 10)
    retention.write_archive(batch)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, finished_at=None)

    assert retention.delete_jobs([job.pk], before) == (0, 0)
    assert Job.objects.filter(pk=job.pk).exists()


def test_a_sweep_on_another_node_makes_this_one_wait(pro_account):
    finished(pro_account, days_ago=100)
    cache.add(retention.LOCK_KEY, "another node", timeout=60)

    result = retention.sweep_jobs()

    assert result.busy and result.jobs_deleted == 0
    assert str(result) == "another node is sweeping finished jobs"
    cache.delete(retention.LOCK_KEY)
    assert retention.sweep_jobs().jobs_deleted == 1


def test_the_time_budget_stops_between_batches(pro_account):
    finished(pro_account, days_ago=100, count=3)

    result = retention.sweep_jobs(batch_size=1, max_seconds=0)

    assert (result.jobs_deleted, result.complete) == (0, False)
    assert "more remain for the next sweep" in str(result)


def test_references_that_do_not_keep_a_job_are_nulled(pro_account):
    job = finished(pro_account, days_ago=100)[0]
    signal = AbuseSignal.objects.create(account=pro_account, job=job, kind=SignalKind.SUBMISSION)

    assert retention.sweep_jobs().jobs_deleted == 1
    signal.refresh_from_db()
    assert signal.job_id is None


def test_the_api_answers_404_for_a_swept_job_and_shows_the_retained(pro_account, api_client_for):
    client = api_client_for(pro_account)
    old = finished(pro_account, days_ago=100)[0]
    kept = finished(pro_account, days_ago=5)[0]
    retention.sweep_jobs()

    assert client.get(f"{JOBS}{old.pk}/").status_code == 404
    assert client.get(f"{JOBS}{old.pk}/logs/").status_code == 404
    assert client.get(f"{JOBS}{kept.pk}/").json()["status"] == "succeeded"
    listed = client.get(JOBS).json()
    assert [row["id"] for row in listed["results"]] == [str(kept.pk)]


def test_the_admin_lists_only_retained_jobs(admin_client, pro_account):
    old = finished(pro_account, days_ago=100)[0]
    kept = finished(pro_account, days_ago=5)[0]
    retention.sweep_jobs()

    page = admin_client.get("/admin/builds/job/").content.decode()
    assert str(kept.pk) in page
    assert str(old.pk) not in page
    assert admin_client.get(f"/admin/builds/job/{kept.pk}/change/").status_code == 200
    gone = admin_client.get(f"/admin/builds/job/{old.pk}/change/", follow=True)
    assert "doesn’t exist" in gone.content.decode()


def test_the_supervisor_sweeps_and_operators_have_a_command(pro_account, capsys):
    finished(pro_account, days_ago=100, count=2)
    task = next(t for t in registry.periodic_tasks() if t.name == "sweep finished jobs")
    assert "2 finished job(s)" in str(task.run())
    assert task.run() is None  # nothing left: the supervisor prints nothing

    finished(pro_account, days_ago=40)
    call_command("sweep_history", "--days", "30", "--no-archive")

    out = capsys.readouterr().out
    assert "Jobs: 1 finished job(s) and 2 log line(s) deleted in 1 batch(es)" in out
    assert "prune device check-ins:" in out
    assert Job.objects.count() == 0
