"""CodePush in tests: bundles published through a real publish job, a deployment's key,
and the CodePush client that talks to a live server."""

from pathlib import Path

from builds.engine.runner import run_next_job
from publishing import codepush, releases
from tests.support.publishing import finished_ota_build

BUNDLE = b"\xc6\x1f\xbc\x03 codepush bundle one " + bytes(range(256)) * 4
BUNDLE_2 = b"\xc6\x1f\xbc\x03 codepush bundle two " + bytes(range(256)) * 5


CLIENT = Path(__file__).resolve().parents[1] / "clients" / "codepush_client.js"


def publish(app, tmp_path, content=BUNDLE, **options):
    job, _, _ = finished_ota_build(app, "android", content=content, tmp_path=tmp_path)
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, "production", **options)
    assert run_next_job() == str(publish_job.pk)
    return version


def key_of(app, env="production", platform="android") -> str:
    return next(
        d.key for d in codepush.deployments_of(app) if d.env == env and d.platform == platform
    )
