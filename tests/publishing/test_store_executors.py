"""Store executors run by the engine's runner with fake eas/flutter tools on PATH."""

import hashlib
import json
import os
import threading
import time

import pytest
import yaml
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from builds.choices import JobStatus
from builds.engine import lifecycle
from builds.engine.runner import run_next_job
from builds.models import Job, JobLog
from publishing import artifacts, sources
from publishing.api.serializers import BuildRequestSerializer
from publishing.builds import request_build
from publishing.choices import ArtifactKind
from publishing.models import Artifact, SourceUpload
from publishing.secrets import set_secret
from tests.publishing import fake_tools
from tests.publishing.archives import tar_gz
from tests.support.live import all_ended, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "expo-token-Zq81xLmP0"
EXPO_APP = [
    ("shop", "dir", None),
    ("shop/app.json", "file", b'{"expo": {"name": "Shop", "slug": "shop"}}'),
    ("shop/eas.json", "file", b'{"build": {"production": {}, "preview": {}}}'),
    ("shop/App.js", "file", b"export default () => null;\n"),
]
FLUTTER_APP = [
    ("pubspec.yaml", "file", b"name: shop\n"),
    ("lib", "dir", None),
    ("lib/main.dart", "file", b"void main() {}\n"),
]


@pytest.fixture
def tools(tmp_path, monkeypatch, settings):
    """``tools(eas=mode, flutter=mode)`` puts the fakes first on PATH; None: not installed."""
    bin_dir = tmp_path / "bin"
    settings.JOB_WORKSPACE_ROOT = str(tmp_path / "workspaces")  # not shared with other runs
    monkeypatch.setenv("BUILDHUB_WORKER_ONLY_SECRET", "must-not-reach-tools")

    def install(eas="success", flutter="success"):
        monkeypatch.setenv("PATH", fake_tools.install(bin_dir, eas=eas, flutter=flutter))
        return bin_dir

    return install


@pytest.fixture
def shop(app, tmp_storage):
    set_secret(app.account, "EXPO_TOKEN", TOKEN)
    return app


def upload(app, members) -> SourceUpload:
    data = tar_gz(members)
    return sources.save_upload(app.account, app, SimpleUploadedFile("src.tar.gz", data))


def queue(app, **fields) -> Job:
    body = BuildRequestSerializer(
        data={"app": app.slug, "platform": "android", "channel": "production", **fields}
    )
    body.is_valid(raise_exception=True)
    return request_build(app.account, body.validated_data)[0]


def run(job) -> Job:
    assert run_next_job() == str(job.pk)
    return Job.objects.get(pk=job.pk)


def log_text(job) -> str:
    return "\n".join(
        JobLog.objects.filter(job=job).order_by("seq").values_list("message", flat=True)
    )


# What every store tool sees of its environment in the sandbox: the allow-list, the job's own
# package caches (plus what the tool itself needs).
SANDBOX_ENV = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "CI",
    "PUB_CACHE",
    "GRADLE_USER_HOME",
    "npm_config_cache",
}


def shell_free(names) -> set[str]:
    """Environment names without those a shell sets for itself."""
    return set(names) - {"PWD", "SHLVL", "_"}


def wait_for(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


# --- Expo EAS ------------------------------------------------------------------------------
def test_an_expo_build_runs_eas_and_records_the_build_url(shop, tools):
    tools()
    source = upload(shop, EXPO_APP)

    job = run(queue(shop, target="expo", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.SUCCEEDED, job.error
    [call] = fake_tools.calls(job, "eas")
    assert call["argv"] == [
        "build",
        "--platform",
        "android",
        "--profile",
        "production",
        "--non-interactive",
        "--json",
        "--no-wait",
    ]
    assert call["cwd"].endswith("/source/shop")
    assert call["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    # The sandbox: the allow-list and what eas needs, nothing of the worker's environment;
    # its own processes only; an unprivileged user.
    assert "BUILDHUB_WORKER_ONLY_SECRET" not in call["env"]
    assert shell_free(call["env"]) == SANDBOX_ENV | {
        "EXPO_TOKEN",
        "EAS_NO_VCS",
        "BUILDHUB_JSON_OUT",
    }
    assert max(call["pids"]) < 20 and call["uid"] != 0
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.kind == ArtifactKind.EAS_BUILD_URL and not artifact.simulated
    build_id = job.result["eas_builds"][0]["id"]
    assert artifact.url == f"https://expo.dev/accounts/acme/projects/shop/builds/{build_id}"
    assert artifact.expires_at is not None
    logs = log_text(job)
    assert TOKEN not in logs and "Logged in with token [REDACTED]" in logs
    assert artifact.url in logs


def test_an_expo_submit_runs_eas_submit(shop, tools):
    tools()
    source = upload(shop, EXPO_APP)

    job = run(queue(shop, target="expo", stage="submit", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert fake_tools.calls(job, "eas")[0]["argv"][:2] == ["submit", "--platform"]
    assert "--latest" in fake_tools.calls(job, "eas")[0]["argv"]
    assert job.result["eas_submissions"][0]["status"] == "IN_QUEUE"


def test_a_failing_eas_fails_the_job_with_its_message(shop, tools):
    tools(eas="fail")
    source = upload(shop, EXPO_APP)

    job = run(queue(shop, target="expo", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert job.error == "eas exited with code 1: Build profile 'production' is missing in eas.json"


def test_eas_output_that_is_not_json_fails_the_job(shop, tools):
    tools(eas="garbage")
    source = upload(shop, EXPO_APP)

    job = run(queue(shop, target="expo", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.FAILED
    assert job.error == "eas printed no JSON result"


def test_a_missing_eas_cli_fails_saying_so(shop, tools):
    tools(eas=None)
    source = upload(shop, EXPO_APP)

    job = run(queue(shop, target="expo", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.FAILED
    assert "The Expo EAS CLI (eas) is not installed on this worker" in job.error
    assert "npm install -g eas-cli" in job.error


def test_a_missing_expo_token_fails_saying_so(app, tmp_storage, tools):
    tools()
    source = upload(app, EXPO_APP)

    job = run(queue(app, target="expo", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("EXPO_TOKEN is not set for this account")
    assert fake_tools.calls(job, "eas") == []


def test_a_slow_eas_times_out_and_is_killed(shop, tools):
    bin_dir = tools(eas="slow")
    source = upload(shop, EXPO_APP)
    job = queue(shop, target="expo", source={"upload": str(source.pk)})
    Job.objects.filter(pk=job.pk).update(timeout_seconds=3)

    job = run(job)

    assert job.status == JobStatus.TIMED_OUT, job.error
    assert len(fake_tools.calls(job, "eas")) == 1
    assert not fake_tools.running(bin_dir / "eas")
    assert "still working" in log_text(job)


def test_an_expo_dry_run_is_simulated_and_labelled(app, tmp_storage, tools):
    tools(eas=None)  # a dry run needs neither the CLI nor the token

    job = run(queue(app, target="expo", dry_run=True))

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["simulated"] is True
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.simulated and artifact.kind == ArtifactKind.EAS_BUILD_URL
    with artifacts.open_artifact(artifact) as handle:
        body = json.load(handle)
    assert body["simulated"] is True and body["command"][:2] == ["eas", "build"]
    logs = log_text(job)
    assert "SIMULATED (dry run)" in logs and "eas CLI missing, EXPO_TOKEN missing" in logs
    assert fake_tools.calls(job, "eas") == []


def test_a_source_refused_at_extraction_fails_the_job(shop, tools, tmp_storage):
    tools()
    from django.core.files.base import ContentFile
    from django.core.files.storage import storages
    from django.utils import timezone

    data = tar_gz([("../escape.txt", "file", b"x")])  # e.g. stored before a rule existed
    key = storages["private"].save("sources/bad.tar.gz", ContentFile(data))
    import hashlib

    bad = SourceUpload.objects.create(
        account=shop.account,
        app=shop,
        storage_key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        expires_at=timezone.now() + timezone.timedelta(days=1),
    )

    job = run(queue(shop, target="expo", source={"upload": str(bad.pk)}))

    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert job.error.startswith("source archive refused: The entry '../escape.txt' points outside")
    assert not (tmp_storage.parent / "escape.txt").exists()


# --- Flutter -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channel", "subcommand", "kind", "name"),
    [
        ("preview", "apk", ArtifactKind.APK, "app-release.apk"),
        ("production", "appbundle", ArtifactKind.AAB, "app-release.aab"),
    ],
)
def test_a_local_flutter_build_stores_its_output(shop, tools, channel, subcommand, kind, name):
    tools()
    source = upload(shop, FLUTTER_APP)

    job = run(
        queue(
            shop,
            target="flutter",
            provider="local",
            channel=channel,
            source={"upload": str(source.pk)},
        )
    )

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert fake_tools.calls(job, "flutter")[0]["argv"] == [
        "--suppress-analytics",
        "build",
        subcommand,
        "--release",
    ]
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.kind == kind and artifact.storage_key.endswith(name)
    assert artifact.visibility == "private" and not artifact.simulated
    with artifacts.open_artifact(artifact) as handle:
        content = handle.read()
    assert content.startswith(b"PK\x03\x04 fake " + subcommand.encode())
    assert job.result["sha256"] == artifact.sha256 == hashlib.sha256(content).hexdigest()
    [call] = fake_tools.calls(job, "flutter")
    assert "BUILDHUB_WORKER_ONLY_SECRET" not in call["env"]
    assert shell_free(call["env"]) == SANDBOX_ENV
    assert max(call["pids"]) < 20 and call["uid"] != 0


def test_a_failing_flutter_build_fails_with_its_last_line(shop, tools):
    tools(flutter="fail")
    source = upload(shop, FLUTTER_APP)

    job = run(queue(shop, target="flutter", source={"upload": str(source.pk)}))

    assert job.status == JobStatus.FAILED
    assert job.error == (
        "flutter exited with code 1: Gradle task assembleRelease failed with exit code 1"
    )
    assert "lib/main.dart:3:1: Error" in log_text(job)


def test_flutter_that_writes_no_output_fails(shop, tools):
    tools(flutter="no-output")
    source = upload(shop, FLUTTER_APP)

    job = run(queue(shop, target="flutter", source={"upload": str(source.pk)}))

    assert job.error == "flutter build appbundle finished but wrote no .aab file"


def test_a_missing_flutter_sdk_and_a_non_flutter_source_fail_clearly(shop, tools):
    tools(flutter=None)
    source = upload(shop, FLUTTER_APP)
    missing = run(queue(shop, target="flutter", source={"upload": str(source.pk)}))
    assert "The Flutter CLI (flutter) is not installed on this worker" in missing.error

    tools()
    not_flutter = upload(shop, EXPO_APP)
    wrong = run(queue(shop, target="flutter", source={"upload": str(not_flutter.pk)}))
    assert wrong.error == "the source has no pubspec.yaml at its root: is it a Flutter app?"


def test_a_running_flutter_build_is_cancelled_and_its_tool_killed(shop, tools):
    bin_dir = tools(flutter="slow")
    source = upload(shop, FLUTTER_APP)
    job = queue(shop, target="flutter", source={"upload": str(source.pk)})

    def work():
        try:
            run_next_job()
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: "still working" in log_text(job))
    lifecycle.cancel_job(job)
    worker.join(60)

    assert not worker.is_alive()
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert len(fake_tools.calls(job, "flutter")) == 1
    assert not fake_tools.running(bin_dir / "flutter")


def test_a_flutter_dry_run_is_simulated(shop, tools):
    tools(flutter=None)

    job = run(queue(shop, target="flutter", channel="preview", dry_run=True))

    assert job.status == JobStatus.SUCCEEDED, job.error
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.simulated and artifact.kind == ArtifactKind.APK
    assert artifact.content_type == "application/json"
    assert "SIMULATED (dry run)" in log_text(job)
    assert fake_tools.calls(job, "flutter") == []


@pytest.mark.parametrize(("platform", "stage"), [("android", "build"), ("ios", "submit")])
def test_flutter_ci_produces_a_workflow_file(shop, tools, platform, stage):
    tools(flutter=None)  # nothing runs on the worker

    job = run(queue(shop, target="flutter", provider="ci", platform=platform, stage=stage))

    assert job.status == JobStatus.SUCCEEDED, job.error
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.kind == ArtifactKind.WORKFLOW and not artifact.simulated
    with artifacts.open_artifact(artifact) as handle:
        workflow = yaml.safe_load(handle)
    build = workflow["jobs"]["build"]
    runs = [step.get("run") for step in build["steps"]]
    if platform == "ios":
        assert build["runs-on"] == "macos-latest"
        assert "flutter build ipa --release" in runs
        assert any("upload-testflight" in step.get("uses", "") for step in build["steps"])
    else:
        assert build["runs-on"] == "ubuntu-latest"
        assert "flutter build appbundle --release" in runs
        assert not any("upload-google-play" in step.get("uses", "") for step in build["steps"])


# --- FlutterFlow ---------------------------------------------------------------------------
def test_flutterflow_mode_a_writes_markdown_instructions(shop, tools):
    tools(flutter=None)

    job = run(queue(shop, target="flutterflow", platform="ios", channel="preview"))

    assert job.status == JobStatus.SUCCEEDED, job.error
    [artifact] = Artifact.objects.filter(job=job)
    assert artifact.kind == ArtifactKind.INSTRUCTIONS
    assert artifact.content_type == "text/markdown"
    with artifacts.open_artifact(artifact) as handle:
        text = handle.read().decode()
    assert text.startswith("# Shop: FlutterFlow export and publish (ios, preview)")
    assert f"| Job | `{job.pk}` |" in text
    assert "Download Code" in text and "App Store Connect" in text
    assert "flutter build ipa --release" in text


# --- through a real worker -------------------------------------------------------------------
def test_a_real_worker_runs_an_expo_build_with_the_fake_eas(app, tools, worker_processes, tmp_path):
    """The registered kind, found by a django-q2 cluster started like production starts it."""
    set_secret(app.account, "EXPO_TOKEN", TOKEN)
    tools()
    source = upload(app, EXPO_APP)  # default storage: the worker process reads it there
    try:
        job = queue(app, target="expo", channel="preview", source={"upload": str(source.pk)})
        worker_processes.start(
            "runcluster",
            BUILDHUB_WORKERS="1",
            PATH=os.environ["PATH"],
            JOB_WORKSPACE_ROOT=str(tmp_path / "worker-workspaces"),
        )
        wait_until(all_ended([job]), message="the expo build to end")

        job = Job.objects.get(pk=job.pk)
        assert job.status == JobStatus.SUCCEEDED, job.error
        [call] = fake_tools.calls(job, "eas")
        assert call["argv"][:5] == ["build", "--platform", "android", "--profile", "preview"]
        [artifact] = Artifact.objects.filter(job=job)
        assert artifact.url.startswith("https://expo.dev/accounts/acme/projects/shop/builds/")
        assert TOKEN not in log_text(job)
    finally:
        storages["private"].delete(source.storage_key)
