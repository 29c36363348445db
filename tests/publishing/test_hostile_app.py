"""A hostile app through real OTA builds (npm, Metro, Babel, hermesc) in the real sandbox.

tests/fixtures/hostile-app's metro.config.js and Babel plugin look for the worker's secrets
(its environment, other processes' environments under /proc, var/secret_key, a canary file
beside the service, another job's workspace, another account's Metro cache), connect to
PostgreSQL and Redis on loopback, write outside their workspace, and put what they found
into their own bundle and log. In the sandbox they find nothing, and the limits end a fork
bomb and a runaway allocation as failed builds that name the limit.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import storages

from builds.choices import JobStatus
from builds.engine.runner import run_next_job
from builds.engine.workspaces import WORKSPACE_PREFIX, workspace_root
from builds.models import Job
from publishing import caches
from publishing.choices import ArtifactKind
from publishing.models import Artifact
from publishing.secrets import set_secret
from tests.publishing.ota_helpers import copy_fixture, make_app, request_ota, upload_source
from tests.support.accounts import make_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.toolchain]

HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile-app"
ENV_CANARY = "env-canary-5b1d0c93"
DB_CANARY = "db-password-canary-77aa"
AWS_CANARY = "aws-secret-canary-0c0c"
FILE_CANARY = "file-canary-e3e3e3"
WORKSPACE_CANARY = "other-job-canary-4d4d"
CACHE_CANARY = "other-account-cache-canary-9f9f"
ACCOUNT_SECRET = "account-own-secret-6a6a"
ENV_NAMES = ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_SECRET_ACCESS_KEY", "HOSTILE_CANARY"]


def hostile_copy(tmp_path: Path, options: dict) -> Path:
    target = tmp_path / "sources" / "hostile-app"
    shutil.copytree(HOSTILE, target, ignore=shutil.ignore_patterns("node_modules"))
    (target / "hostile.json").write_text(json.dumps(options))
    return target


def build(account, source: Path) -> Job:
    app = make_app(account, slug=f"app-{Job.objects.count()}")
    job = request_ota(app, upload_source(app, source))
    assert run_next_job() == str(job.pk)
    return Job.objects.get(pk=job.pk)


def log_of(job: Job) -> str:
    return "\n".join(job.logs.order_by("seq").values_list("message", flat=True))


def report(log: str, prefix: str) -> dict:
    for line in log.splitlines():
        if line.startswith(f"{prefix} "):
            return json.loads(line[len(prefix) + 1 :])
    raise AssertionError(f"no {prefix} line in the log:\n{log[-3000:]}")


@pytest.fixture
def worker_secrets(monkeypatch, tmp_path, settings):
    """The worker's own secrets, as a production worker has them, and files beside it."""
    monkeypatch.setenv("HOSTILE_CANARY", ENV_CANARY)
    monkeypatch.setenv("DATABASE_URL", f"postgres://buildhub:{DB_CANARY}@127.0.0.1:5432/buildhub")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY)
    monkeypatch.setenv("SECRET_KEY", settings.SECRET_KEY)
    settings.JOB_WORKSPACE_ROOT = str(tmp_path / "workspaces")
    var_canary = Path(settings.VAR_DIR) / "hostile-canary.txt"
    var_canary.write_text(FILE_CANARY)
    other_job = workspace_root() / f"{WORKSPACE_PREFIX}other-job" / "secret.txt"
    other_job.parent.mkdir(parents=True)
    other_job.write_text(WORKSPACE_CANARY)
    yield {"var_canary": var_canary, "other_job": other_job}
    var_canary.unlink(missing_ok=True)


def tree_digest(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_hostile_metro_config_and_babel_plugin_reach_nothing_of_the_service(
    worker_secrets, tmp_storage, tmp_path
):
    # Another account built first: its Metro cache is what a poisoner would aim at.
    victim = make_account("pro", "Victim Co")
    victim_build = build(victim, copy_fixture(tmp_path, "victim-app"))
    assert victim_build.status == JobStatus.SUCCEEDED, victim_build.error
    victim_cache = Path(settings.OTA_METRO_CACHE_DIR) / caches.account_key(victim)
    (victim_cache / "canary.txt").write_text(CACHE_CANARY)
    victim_cache_before = tree_digest(victim_cache)

    attacker = make_account("pro", "Attacker Co")
    set_secret(attacker, "BUILD_FLAVOUR", ACCOUNT_SECRET)  # its own secret: it may see that
    var = Path(settings.VAR_DIR)
    planted = {
        "var": var / "planted.js",
        "workspaces": workspace_root() / "planted.js",
        "victim_cache": victim_cache / "planted.js",
        "toolchain": Path(settings.OTA_TOOLCHAIN_DIR) / "planted.js",
        "host_tmp": Path("/tmp") / f"hostile-planted-{os.getpid()}.js",
    }
    canaries = [
        ENV_CANARY,
        DB_CANARY,
        AWS_CANARY,
        FILE_CANARY,
        WORKSPACE_CANARY,
        CACHE_CANARY,
        settings.SECRET_KEY,
    ]
    options = {
        "mode": "survey",
        "canaries": canaries,
        "read": [
            str(var / "secret_key"),
            str(worker_secrets["var_canary"]),
            str(worker_secrets["other_job"]),
            str(victim_cache / "canary.txt"),
            str(victim_cache),
            str(Path(settings.OTA_NPM_CACHE_DIR)),
            str(var),
            "/root",
            "/home",
            f"/proc/{os.getpid()}/environ",
        ],
        "write": [str(path) for path in planted.values()],
        "ports": [5432, 6379],
        "env_names": ENV_NAMES,
    }

    job = build(attacker, hostile_copy(tmp_path, options))

    log = log_of(job)
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{log[-3000:]}"
    for where in ("HOSTILE_METRO_REPORT", "HOSTILE_BABEL_REPORT"):
        found = report(log, where)
        assert found["env"]["names_present"] == [], where
        assert found["env"]["canaries"] == [], where
        assert found["proc"]["environ_canaries"] == [], where
        assert max(found["proc"]["pids"]) < 20, where  # its own PID namespace
        assert found["read_canaries"] == [], where
        assert set(found["read"].values()) <= {"ENOENT", "EACCES"}, (where, found["read"])
        # /tmp is the step's own, empty and writable; nothing written there reaches the host's.
        written = {path for path, result in found["write"].items() if result == "ok"}
        assert written <= {str(planted["host_tmp"])}, (where, found["write"])
        assert set(found["connect"].values()) <= {"ECONNREFUSED", "ENETUNREACH"}, where
        assert found["uid"] != 0, where
    for path in planted.values():
        assert not path.exists(), path
    assert tree_digest(victim_cache) == victim_cache_before

    bundle = Artifact.objects.get(job=job, kind=ArtifactKind.OTA_BUNDLE)
    sourcemap = Artifact.objects.get(job=job, kind=ArtifactKind.SOURCEMAP)
    with storages["default"].open(bundle.storage_key) as handle:
        bundle_bytes = handle.read()
    with storages["private"].open(sourcemap.storage_key) as handle:
        map_bytes = handle.read()
    assert b"names_present" in bundle_bytes  # both reports made it into the bundle...
    assert bundle_bytes.count(b"environ_canaries") >= 2
    for canary in canaries:  # ...with nothing secret in them, nor in the map or the log
        for place, content in (("bundle", bundle_bytes), ("map", map_bytes)):
            assert canary.encode() not in content, (place, canary[:12])
        assert canary not in log
    assert ACCOUNT_SECRET not in log  # the account's own secret is redacted from its log


def test_a_fork_bomb_and_a_huge_allocation_fail_naming_the_limit_and_the_worker_goes_on(
    worker_secrets, tmp_storage, tmp_path, settings
):
    settings.BUILD_SANDBOX_MEMORY_MB = 1536
    account = make_account("pro", "Bomber Co")
    bomb = {"mode": "forkbomb", "canaries": [], "read": [], "write": [], "ports": []}
    if os.geteuid() == 0:  # the process limit is the account's own only under a root worker
        settings.BUILD_SANDBOX_MAX_PROCESSES = 96
        forked = build(account, hostile_copy(tmp_path / "bomb", bomb))
        assert forked.status == JobStatus.FAILED
        assert forked.error == (
            "node was stopped by the sandbox's process limit (BUILD_SANDBOX_MAX_PROCESSES=96)"
        ), log_of(forked)[-2000:]
        assert forked.attempts == 1

    allocating = build(account, hostile_copy(tmp_path / "memory", {**bomb, "mode": "memory"}))
    assert allocating.status == JobStatus.FAILED
    assert allocating.error == (
        "node was stopped by the sandbox's memory limit (BUILD_SANDBOX_MEMORY_MB=1536)"
    ), log_of(allocating)[-2000:]

    # The same worker process serves the next build as if nothing happened.
    ordinary = build(account, copy_fixture(tmp_path))
    assert ordinary.status == JobStatus.SUCCEEDED, ordinary.error
