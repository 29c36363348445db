"""OTA builds of the fixture React Native app with the real npm, Metro and hermesc.

The fixture (tests/fixtures/rn-app) carries its own Metro, React Native Metro config and
Hermes compiler in its lock file; copies of it made here add a syntax error, a large module
or drop the dependencies (the pinned tool chain then builds it).
"""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import storages
from django.utils import timezone

from builds.choices import JobStatus, Tier
from builds.engine.runner import run_next_job
from builds.limits import effective_limits
from builds.models import EnterpriseLimit, Job
from publishing import ota, releases
from publishing.choices import ArtifactKind, Visibility
from publishing.models import App, Artifact
from tests.publishing.ota_helpers import copy_fixture, make_app, request_ota, upload_source
from tests.support.accounts import make_account
from tests.support.live import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.toolchain]

TOOLCHAIN_HERMESC = "node_modules/hermes-compiler/hermesc/linux64-bin/hermesc"


def build(app: App, directory: Path, platform="android") -> Job:
    """Submit an OTA build and run it as a worker does; the job as it ended."""
    job = request_ota(app, upload_source(app, directory), platform)
    assert run_next_job() == str(job.pk)
    return Job.objects.get(pk=job.pk)


def log_of(job: Job) -> str:
    return "\n".join(job.logs.order_by("seq").values_list("message", flat=True))


def hermesc() -> Path:
    return Path(settings.OTA_TOOLCHAIN_DIR) / TOOLCHAIN_HERMESC


def assert_hermes_bundle(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == bytes.fromhex("c61fbc03c103191f")
    dump = subprocess.run(
        [hermesc(), "-b", "-dump-bytecode", path], capture_output=True, text=True, timeout=60
    )
    assert dump.returncode == 0, dump.stderr
    assert "Function<" in dump.stdout
    return int.from_bytes(data[8:12], "little")


# --- the fixture app through a real worker -------------------------------------------------
@pytest.mark.timeout(600)  # the worker's cold build may take 240 s
def test_the_fixture_app_is_built_by_a_worker_into_hermes_bytecode(
    pro_account, worker_processes, tmp_path
):
    app = make_app(pro_account)
    job = request_ota(app, upload_source(app, copy_fixture(tmp_path)), "android")
    worker_processes.start("runcluster", BUILDHUB_WORKERS="1")

    wait_until(
        lambda: Job.objects.get(pk=job.pk).status not in (JobStatus.QUEUED, JobStatus.RUNNING),
        seconds=240,
        message="the OTA build to end",
    )

    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{log_of(job)}"
    assert job.progress == 100
    bundle = Artifact.objects.get(job=job, kind=ArtifactKind.OTA_BUNDLE)
    sourcemap = Artifact.objects.get(job=job, kind=ArtifactKind.SOURCEMAP)
    try:
        bundle_path = Path(storages["default"].path(bundle.storage_key))
        assert bundle.visibility == Visibility.PUBLIC
        assert bundle.platform == "android" and bundle.expires_at > timezone.now()
        version = assert_hermes_bundle(bundle_path)
        assert version == 98  # hermes-compiler 250829098.x, the fixture's own
        assert hashlib.sha256(bundle_path.read_bytes()).hexdigest() == bundle.sha256
        assert job.result["bundle_sha256"] == bundle.sha256
        assert job.result["bundle_size"] == bundle.size == bundle_path.stat().st_size
        assert job.result["bytecode_version"] == 98
        assert job.result["platform"] == "android"
        assert job.result["metro_from"] == "app" and job.result["hermesc_from"] == "app"

        assert sourcemap.visibility == Visibility.PRIVATE
        assert not storages["default"].exists(sourcemap.storage_key)
        with storages["private"].open(sourcemap.storage_key) as handle:
            composed = json.load(handle)
        assert {"index.js", "src/cart.js", "src/greeting.js", "src/format.js"} <= set(
            composed["sources"]
        )
        assert composed["mappings"]
        # Hermes' function offsets are only in a map composed with hermesc's.
        assert "x_hermes_function_offsets" in composed
        log = log_of(job)
        for step in ("npm ci", "metro 0.83.8 from the app", "hermesc from the app", "composed"):
            assert step in log
    finally:
        storages["default"].delete(bundle.storage_key)
        storages["private"].delete(sourcemap.storage_key)


def test_a_built_bundle_is_published_and_devices_get_it(pro_account, tmp_storage, tmp_path):
    from rest_framework.test import APIClient

    app = make_app(pro_account)
    job = build(app, copy_fixture(tmp_path), "ios")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["platform"] == "ios"
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, "production")
    assert run_next_job() == str(publish_job.pk)

    client = APIClient()
    query = "/api/v1/updates/check?app=shop&platform=ios&runtime_version=1&channel=production"
    update = client.get(query, HTTP_X_APP_KEY=app.app_key)
    assert update.status_code == 200, update.content
    assert update.json()["sha256"] == job.result["bundle_sha256"]
    bundle = client.get(update.json()["bundle_url"])
    assert bundle.status_code == 200
    assert b"".join(bundle.streaming_content)[:4] == bytes.fromhex("c61fbc03")
    current = client.get(
        f"{query}&current={job.result['bundle_sha256']}", HTTP_X_APP_KEY=app.app_key
    )
    assert current.status_code == 204


# --- failures ----------------------------------------------------------------------------------
def test_a_syntax_error_fails_with_metros_message_and_the_file_and_line(
    pro_account, tmp_storage, tmp_path
):
    source = copy_fixture(tmp_path)
    (source / "src" / "cart.js").write_text("export class Cart {\n  items = [;\n}\n")

    job = build(make_app(pro_account), source)

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Metro could not bundle the app: ")
    assert "src/cart.js:2:11" in job.error
    assert "Unexpected token" in job.error
    assert "\x1b" not in job.error and "\x1b" not in log_of(job)
    assert str(ota.workspace_root()) not in job.error  # paths as the customer knows them
    assert job.attempts == 1  # not retried: it would fail the same way
    assert not Artifact.objects.filter(job=job).exists()


def test_a_missing_import_names_the_importing_file_and_line(pro_account, tmp_storage, tmp_path):
    source = copy_fixture(tmp_path)
    index = source / "index.js"
    index.write_text(index.read_text().replace("./src/format", "./src/money"))

    job = build(make_app(pro_account), source)

    assert job.status == JobStatus.FAILED
    assert "UnableToResolveError in index.js:3" in job.error
    assert "./src/money" in job.error


def test_a_bundle_over_the_accounts_limit_fails_and_stores_nothing(tmp_storage, tmp_path):
    account = make_account(Tier.ENTERPRISE, "Big Bundle Co")
    EnterpriseLimit.objects.create(account=account, max_bundle_size_mb=1)
    source = copy_fixture(tmp_path)
    filler = "".join(f"{n:07d}" for n in range(200_000))  # 1.4 MB that Metro keeps as is
    (source / "src" / "catalog.js").write_text(f"export const CATALOG = '{filler}';\n")
    index = source / "index.js"
    index.write_text(
        "import {CATALOG} from './src/catalog';\n"
        + index.read_text()
        + "globalThis.catalogSize = CATALOG.length;\n"
    )

    job = build(make_app(account), source)

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("bundle is 1.")
    assert job.error.endswith(" MB; the Enterprise tier allows 1 MB")
    assert not Artifact.objects.filter(job=job).exists()


def test_the_size_message_names_the_tier_and_its_limit(free_account):
    limits = effective_limits(free_account)
    size = int(12.3 * 1024 * 1024)

    assert ota.bundle_size_error(size, limits) == "bundle is 12.3 MB; the Free tier allows 10 MB"
    assert ota.bundle_size_error(limits.max_bundle_bytes, limits) is None


def test_an_app_without_a_tool_chain_is_built_with_the_pinned_one(
    pro_account, tmp_storage, tmp_path
):
    source = tmp_path / "plain"
    source.mkdir()
    (source / "package.json").write_text('{"name": "plain", "version": "1.0.0", "main": "app.js"}')
    (source / "package-lock.json").write_text(
        '{"name": "plain", "version": "1.0.0", "lockfileVersion": 3, "requires": true, '
        '"packages": {"": {"name": "plain", "version": "1.0.0"}}}'
    )
    (source / "app.js").write_text("const answer = () => 42;\nglobalThis.answer = answer();\n")

    job = build(make_app(pro_account), source)

    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{log_of(job)}"
    assert job.result["entry"] == "app.js"
    assert job.result["metro_from"] == "toolchain"
    assert job.result["hermesc_from"] == "toolchain"
    bundle = Artifact.objects.get(job=job, kind=ArtifactKind.OTA_BUNDLE)
    assert assert_hermes_bundle(Path(storages["default"].path(bundle.storage_key))) == 98


def test_a_missing_tool_chain_fails_with_what_to_install(
    pro_account, tmp_storage, tmp_path, settings
):
    bare = tmp_path / "bare-toolchain"
    bare.mkdir()
    shutil.copy(Path(settings.OTA_TOOLCHAIN_DIR) / "ota.js", bare / "ota.js")
    settings.OTA_TOOLCHAIN_DIR = bare
    source = tmp_path / "plain"
    source.mkdir()
    (source / "package.json").write_text('{"name": "plain", "version": "1.0.0"}')
    (source / "package-lock.json").write_text('{"name": "plain", "lockfileVersion": 3}')
    (source / "index.js").write_text("globalThis.ok = true;\n")

    job = build(make_app(pro_account), source)

    assert job.status == JobStatus.FAILED
    assert job.error == (
        "metro is neither in the app's dependencies nor in the BuildHub tool chain "
        "(run `make toolchain`)"
    )


def test_node_missing_on_the_worker_is_a_clear_failure(
    pro_account, tmp_storage, tmp_path, settings
):
    settings.OTA_NODE = str(tmp_path / "no-node-here")

    job = build(make_app(pro_account), copy_fixture(tmp_path))

    assert job.status == JobStatus.FAILED
    assert "is not installed on this worker: OTA builds need Node.js 20+ and npm" in job.error


def test_a_source_without_a_lock_file_is_refused(pro_account, tmp_storage, tmp_path):
    source = copy_fixture(tmp_path)
    (source / "package-lock.json").unlink()
    (source / "yarn.lock").write_text("# yarn lockfile v1\n")

    job = build(make_app(pro_account), source)

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("The app has no package-lock.json (found yarn.lock;")


def test_hermesc_is_the_apps_own_and_never_a_mismatched_fallback(tmp_path, settings):
    old_rn = tmp_path / "rn-0.81"  # hermesc inside react-native (up to 0.82)
    bundled = old_rn / "node_modules/react-native/sdks/hermesc" / ota.HERMESC_BIN / "hermesc"
    bundled.parent.mkdir(parents=True)
    bundled.write_bytes(b"")
    assert ota.find_hermesc(old_rn) == (bundled, "app")

    no_compiler = tmp_path / "rn-without-hermes"
    (no_compiler / "node_modules/react-native").mkdir(parents=True)
    (no_compiler / "node_modules/react-native/package.json").write_text("{}")
    with pytest.raises(ota.JobFailed, match="bytecode from another compiler would not run"):
        ota.find_hermesc(no_compiler)

    plain = tmp_path / "plain"
    plain.mkdir()
    assert ota.find_hermesc(plain) == (
        Path(settings.OTA_TOOLCHAIN_DIR) / TOOLCHAIN_HERMESC,
        "toolchain",
    )
