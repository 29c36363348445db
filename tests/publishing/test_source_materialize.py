"""materialize(): uploads and shallow git clones into a job's workspace, run by the runner."""

import datetime as dt
import hashlib
import os
import stat

import pytest
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from builds import registry
from builds.choices import JobStatus
from builds.engine import sandbox
from builds.engine.runner import run_next_job
from builds.engine.submit import submit_job
from builds.models import Job, JobLog
from publishing import hosts, sources
from publishing.models import SourceUpload
from tests.publishing.archives import zip_bytes
from tests.publishing.git_server import GitHttpServer, make_repository
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db(transaction=True)
KIND = "test.materialize"


def materialize_executor(context):
    root = sources.materialize(context, context.params["source"])
    owners = {path.stat().st_uid for path in root.rglob("*")}
    return {
        "owners": sorted(owners),
        "root": root.name,
        "files": sorted(
            str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir()
        ),
        "readme": (root / "README.md").read_text() if (root / "README.md").exists() else "",
    }


registry.register_kind(KIND, materialize_executor, counts_as_build=False)


@pytest.fixture
def isolated(settings, tmp_path):
    settings.JOB_WORKSPACE_ROOT = str(tmp_path / "workspaces")


def run(account, source, timeout_seconds=None) -> Job:
    job = submit_job(account, KIND, {"source": source}, staff=True)[0]
    if timeout_seconds:
        Job.objects.filter(pk=job.pk).update(timeout_seconds=timeout_seconds)
    assert run_next_job() == str(job.pk)
    return Job.objects.get(pk=job.pk)


def logs(job) -> str:
    return "\n".join(JobLog.objects.filter(job=job).values_list("message", flat=True))


# --- uploads -------------------------------------------------------------------------------
def test_an_upload_is_unpacked_into_the_workspace(app, tmp_storage, isolated):
    data = zip_bytes(
        [
            ("README.md", b"hello"),
            ("src/app.js", b"1"),
            ("run", b"#!/bin/sh", stat.S_IFREG | 0o755),
        ]
    )
    upload = sources.save_upload(app.account, app, SimpleUploadedFile("a.zip", data))

    job = run(app.account, {"upload": str(upload.pk)})

    assert job.status == JobStatus.SUCCEEDED, job.error
    owners = job.result.pop("owners")
    assert job.result == {
        "root": "source",
        "files": ["README.md", "run", "src/app.js"],
        "readme": "hello",
    }
    assert f"source: upload {upload.pk}" in logs(job)
    # Extracted in the sandbox, as the account's own user (a root worker's), not the worker.
    assert 'ARCHIVE_OK {"files": 3' in logs(job)
    if os.geteuid() == 0:
        assert owners == [sandbox.sandbox_uid(app.account_id)]


def test_an_upload_of_another_account_expired_or_altered_fails_the_job(app, tmp_storage, isolated):
    data = zip_bytes([("README.md", b"hello")])
    upload = sources.save_upload(app.account, app, SimpleUploadedFile("a.zip", data))
    stranger = make_account("free", "Stranger")

    other = run(stranger, {"upload": str(upload.pk)})
    assert other.error == f"source upload {upload.pk} does not exist for this account"

    with storages["private"].open(upload.storage_key, "wb") as handle:
        handle.write(zip_bytes([("README.md", b"swapped")]))
    altered = run(app.account, {"upload": str(upload.pk)})
    assert altered.error == f"source upload {upload.pk} in storage does not match its sha256"

    SourceUpload.objects.filter(pk=upload.pk).update(
        expires_at=timezone.now() - dt.timedelta(days=1)
    )
    expired = run(app.account, {"upload": str(upload.pk)})
    assert "expired on" in expired.error and "upload it again" in expired.error
    assert {other.attempts, altered.attempts, expired.attempts} == {1}  # not retried


def test_a_missing_source_fails_the_job(app, isolated):
    job = run(app.account, None)
    assert job.status == JobStatus.FAILED
    assert job.error == "this build needs a source: an upload or a git URL"


# --- git -----------------------------------------------------------------------------------
@pytest.fixture
def git_server(tmp_path, settings, isolated):
    settings.SOURCE_GIT_PROTOCOLS = ["http"]  # a loopback server without TLS, for the test
    settings.SOURCE_GIT_ALLOW_PRIVATE_HOSTS = True
    root = tmp_path / "repos"
    root.mkdir()
    repo = make_repository(
        root,
        "app.git",
        [{"README.md": "first", "a.txt": "a"}, {"README.md": "second", "b/c.txt": "c"}],
    )
    with GitHttpServer(root) as server:
        server.repo = repo
        yield server


@pytest.mark.parametrize(
    ("ref", "readme", "files"),
    [
        ("", "second", ["README.md", "a.txt", "b/c.txt"]),
        ("main", "second", ["README.md", "a.txt", "b/c.txt"]),
        ("v1", "first", ["README.md", "a.txt"]),
    ],
)
def test_a_git_source_is_shallow_cloned_at_its_ref(app, git_server, ref, readme, files):
    job = run(app.account, {"git": git_server.url("app.git"), "ref": ref})

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["readme"] == readme
    assert job.result["files"] == files  # the .git directory is not part of the source
    assert f"shallow clone of {git_server.url('app.git')}" in logs(job)


def test_a_git_source_at_a_commit(app, git_server):
    first = git_server.repo["shas"][0]
    job = run(app.account, {"git": git_server.url("app.git"), "ref": first})
    assert job.result["readme"] == "first", job.error


def test_an_unknown_ref_or_repository_fails_with_a_clear_message(app, git_server):
    url = git_server.url("app.git")
    job = run(app.account, {"git": url, "ref": "no-such-branch"})
    assert job.status == JobStatus.FAILED
    assert job.error == f"git clone of {url} at no-such-branch failed (git exited with code 128)"
    assert "no-such-branch" in logs(job)

    missing = run(app.account, {"git": git_server.url("nothing.git"), "ref": ""})
    assert missing.error.startswith(f"git clone of {git_server.url('nothing.git')} at HEAD failed")


def test_a_hanging_git_server_times_the_job_out(app, git_server):
    git_server.hang()

    job = run(app.account, {"git": git_server.url("app.git"), "ref": "main"}, timeout_seconds=3)

    assert job.status == JobStatus.TIMED_OUT


def test_private_hosts_and_plain_http_are_refused_in_the_worker_too(app, isolated):
    job = run(app.account, {"git": "http://127.0.0.1:9/app.git", "ref": ""})
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Git source refused: http URLs are not allowed here")


def test_a_host_name_resolving_to_a_private_address_is_refused_before_cloning(
    app, isolated, monkeypatch
):
    resolved = []

    def fake_dns(host):
        resolved.append(host)
        return ["10.0.0.5"]

    monkeypatch.setattr(hosts, "resolve_host", fake_dns)

    job = run(app.account, {"git": "https://git.example.com/app.git", "ref": ""})

    assert resolved == ["git.example.com"]
    assert job.error == "git source refused: git.example.com resolves to a private address"


def test_the_upload_sha256_is_what_was_stored(app, tmp_storage):
    data = zip_bytes([("a", b"1")])
    upload = sources.save_upload(app.account, app, SimpleUploadedFile("a.zip", data))
    assert upload.sha256 == hashlib.sha256(data).hexdigest() and upload.size == len(data)
