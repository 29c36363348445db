"""`buildhub` end to end: a real subprocess of the command against daphne and a worker.

The stack is the browser tests' (daphne and the worker supervisor on the test database
and Redis). The fixture app is packed from a directory (its .gitignore honoured), uploaded,
built by a real worker (npm, Metro, hermesc) and followed over the progress websocket; a
failing build exits 1, a refused token 2.
"""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from builds.choices import JobStatus
from builds.models import Job
from builds.services import create_api_token
from publishing.models import Release
from tests.publishing.ota_helpers import copy_fixture, make_app
from tests.support.accounts import make_account
from tests.support.live import running_stack

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.toolchain,
    pytest.mark.timeout(1200),  # builds, each given BUILD_WAIT
]

BUILD_WAIT = 600  # a cold npm on a busy machine; a limit on a hung test, not a timing


@pytest.fixture
def live_stack(tmp_path):
    # Account ids come back after a rolled-back test run (SQLite): budgets of their own.
    with running_stack(tmp_path, JOBS_SUBMIT_RATE="1000/h", JOBS_READ_RATE="10000/5m") as stack:
        yield stack


def buildhub(live_stack, token, *args, **env):
    """Run the command as a CI step would; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "buildhub_cli", *args],
        cwd=settings.BASE_DIR,
        env={
            "PATH": os.environ["PATH"],
            "BUILDHUB_URL": live_stack.url,
            "BUILDHUB_TOKEN": token,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=BUILD_WAIT,
    )


def test_build_wait_follows_a_real_build_to_its_artifacts(live_stack, tmp_path):
    account = make_account("pro", "CLI Co")
    make_app(account)
    token = create_api_token(account, name="ci", scopes=["builds:read", "builds:write"]).secret
    source = copy_fixture(tmp_path)
    (source / ".gitignore").write_text("node_modules/\n*.log\n")
    (source / "debug.log").write_text("not for the server")
    (source / "node_modules" / "junk").mkdir(parents=True)
    github = {"GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "build"}
    args = ["build", "--app", "shop", "--target", "ota", "--platform", "android"]

    done = buildhub(live_stack, token, *args, "--source", str(source), "--wait", **github)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    job = Job.objects.get(account=account)
    assert job.status == JobStatus.SUCCEEDED
    assert "Packed 8 files" in out  # the fixture (7) and .gitignore; no debug.log, no node_modules
    assert f"Build {job.pk} queued" in out
    for line in ("npm ci", "metro 0.83.8 from the app", "hermesc from the app", "composed"):
        assert line in out
    assert f"Job {job.pk} succeeded." in out
    assert "ota_bundle android" in out and "sourcemap android" in out
    assert "Traceback" not in done.stderr

    # The same CI step again: the first job, nothing queued.
    again = buildhub(live_stack, token, *args, "--source", str(source), "--json", **github)
    assert again.returncode == 0, again.stderr
    assert f'"id": "{job.pk}"' in again.stdout
    assert Job.objects.filter(account=account).count() == 1

    downloads = tmp_path / "artifacts"
    fetched = buildhub(live_stack, token, "artifacts", str(job.pk), "--download", str(downloads))
    assert fetched.returncode == 0, fetched.stderr
    bundles = list(downloads.glob("ota_bundle-android-*.hbc"))
    assert len(bundles) == 1
    assert bundles[0].read_bytes()[:4] == bytes.fromhex("c61fbc03")  # Hermes bytecode
    assert bundles[0].stat().st_size == job.result["bundle_size"]


def live_release(app):
    live = Release.objects.filter(app=app, env="production", rolled_back_at__isnull=True)
    return live.order_by("-published_at").first()


def test_from_a_build_to_a_release_and_back_with_the_command(live_stack, tmp_path):
    account = make_account("pro", "CLI Release Co")
    app = make_app(account)
    scopes = ["builds:read", "builds:write", "publish"]
    token = create_api_token(account, name="ci", scopes=scopes).secret
    source = copy_fixture(tmp_path)
    built = buildhub(
        live_stack, token, "build", "--app", "shop", "--target", "ota", "--platform", "android",
        "--source", str(source), "--wait",
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    build = Job.objects.get(account=account)

    versions = [buildhub(live_stack, token, "version", "--app", "shop", "--build", str(build.pk))]
    versions.append(
        buildhub(live_stack, token, "version", "--app", "shop", "--build", str(build.pk))
    )
    assert [done.stdout for done in versions] == [
        f"Version 1 of shop from build {build.pk}.\n",
        f"Version 2 of shop from build {build.pk}.\n",
    ]
    first = buildhub(live_stack, token, "publish", "--app", "shop", "--version", "1",
                     "--env", "production", "--wait")  # fmt: skip
    second = buildhub(live_stack, token, "publish", "--app", "shop", "--version", "2",
                      "--env", "production", "--rollout", "50", "--wait")  # fmt: skip
    assert (first.returncode, second.returncode) == (0, 0), first.stdout + second.stdout
    live = live_release(app)
    assert (live.version.number, live.rollout_percent) == (2, 50)
    publish_job = Job.objects.get(account=account, kind="publish", result__release_id=live.pk)
    assert f"Job {publish_job.pk} succeeded." in second.stdout

    status = buildhub(live_stack, token, "status")
    assert status.returncode == 0, status.stderr
    assert "CLI Release Co (cli-release-co), pro tier" in status.stdout
    assert "0 job(s) queued or running" in status.stdout

    logs = buildhub(live_stack, token, "logs", str(publish_job.pk))
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr

    back = buildhub(live_stack, token, "rollback", "--app", "shop", "--env", "production")
    assert back.returncode == 0, back.stderr
    assert "shop production rolled back" in back.stdout
    assert live_release(app).version.number == 1

    too_late = buildhub(live_stack, token, "cancel", str(publish_job.pk))  # a conflict: exit 1
    assert too_late.returncode == 1
    assert too_late.stderr == "buildhub: error: This job has already ended (succeeded).\n"


def test_a_failed_build_exits_1_and_a_refused_token_2(live_stack, tmp_path):
    account = make_account("pro", "CLI Fail Co")
    make_app(account)
    token = create_api_token(account, name="ci", scopes=["builds:read", "builds:write"]).secret
    source = tmp_path / "no-lock"
    source.mkdir()
    (source / "package.json").write_text('{"name": "shop", "version": "1.0.0"}')
    (source / "index.js").write_text("console.log('hi');\n")
    args = ["build", "--app", "shop", "--target", "ota", "--platform", "android", "--wait"]

    failed = buildhub(live_stack, token, *args, "--source", str(source))

    assert failed.returncode == 1, failed.stdout + failed.stderr
    job = Job.objects.get(account=account)
    assert job.status == JobStatus.FAILED
    assert f"Job {job.pk} failed." in failed.stdout
    assert "package-lock.json" in failed.stdout  # the reason, from the log and the error
    assert "Traceback" not in failed.stderr

    refused = buildhub(live_stack, "bh_nope_nope", *args, "--source", str(source))

    assert refused.returncode == 2
    assert refused.stderr.startswith("buildhub: error: ")
    assert "BUILDHUB_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert Job.objects.filter(account=account).count() == 1
