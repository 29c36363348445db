"""The data a load run needs, written to a JSON file the Locust users read.

Accounts of every tier with one token each, a staff session (diagnostic jobs are staff-only),
and a Pro app with a published release whose bundle is a real file in storage: the release
goes through ``create_version`` and the real publish job, run by the engine in this process,
only the Metro build in front of it is replaced by a bundle file (as
tests/publishing/conftest.py ``finished_ota_build``).
"""

import os
import tempfile
from pathlib import Path

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.middleware.csrf import _get_new_csrf_string
from django.utils import timezone

from builds.choices import JobStatus, Tier, TokenScope
from builds.engine.runner import run_next_job
from builds.models import Job
from builds.services import create_account, create_api_token
from publishing import artifacts, codepush, releases
from publishing.choices import ArtifactKind, Platform, Visibility
from publishing.models import App

BUNDLE_BYTES = 256 * 1024  # a small production bundle; devices download it whole
POLLED_JOBS = 20


def _bundle_build(app: App, platform: str, workdir: Path) -> Job:
    job = Job.objects.create(
        kind=releases.OTA_KIND,
        account=app.account,
        priority_class=app.account.tier_spec.priority_class,
        status=JobStatus.SUCCEEDED,
        params={"app_id": app.pk, "app": app.slug, "platform": platform, "channel": "production"},
        timeout_seconds=900,
        finished_at=timezone.now(),
        progress=100,
    )
    path = workdir / f"{job.pk}-{platform}.hbc"
    path.write_bytes(b"\xc6\x1f\xbc\x03" + os.urandom(BUNDLE_BYTES - 4))
    bundle = artifacts.store_file(
        path,
        account=app.account,
        kind=ArtifactKind.OTA_BUNDLE,
        key=f"{app.account.slug}/{app.slug}/{job.pk}/index.hbc",
        job=job,
        app=app,
        platform=platform,
        visibility=Visibility.PUBLIC,
    )
    job.result = {"bundle_sha256": bundle.sha256, "bundle_size": bundle.size}
    job.save(update_fields=["result"])
    return job


def _publish(app: App) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        builds = [_bundle_build(app, platform, Path(workdir)) for platform in app.platforms]
    version = releases.create_version(app, [job.pk for job in builds])
    publish_job, _ = releases.request_publish(version, "production", staff=True)
    # The engine runs it here, in this process, as a worker would (the CodePush packages are
    # made in the build sandbox).
    if run_next_job() != str(publish_job.pk):
        raise RuntimeError("the seed's publish job was not the one run")
    published = Job.objects.get(pk=publish_job.pk)
    if published.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the seed's publish failed: {published.error}")
    release = releases.current_release(app, "production")
    return {
        platform: {"artifact": bundle["artifact"], "sha256": bundle["sha256"]}
        for platform, bundle in release["manifest"]["bundles"].items()
    }


def _staff_session() -> dict:
    staff = get_user_model().objects.create_user("load-staff", is_staff=True)
    session = SessionStore()
    session[SESSION_KEY] = str(staff.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = staff.get_session_auth_hash()
    session.create()
    return {"sessionid": session.session_key, "csrftoken": _get_new_csrf_string()}


def seed() -> dict:
    """Create everything in an empty, migrated database; return what the users need."""
    accounts = {
        tier: create_account(f"Load {tier}", tier=tier, slug=f"load-{tier}") for tier in Tier.values
    }
    tokens = {
        tier: create_api_token(account, name="load", scopes=TokenScope.values).secret
        for tier, account in accounts.items()
    }
    app = App.objects.create(
        account=accounts[Tier.PRO],
        slug="load-shop",
        name="Load Shop",
        platforms=[Platform.ANDROID, Platform.IOS],
        runtime_version="1.0.0",
    )
    bundles = _publish(app)
    deployment_keys = {  # what the app's react-native-code-push binaries carry
        deployment.platform: deployment.key
        for deployment in codepush.deployments_of(app)
        if deployment.env == "production"
    }
    polled = {
        tier: [
            str(
                Job.objects.create(
                    kind="diagnostic.noop",
                    account=account,
                    priority_class=account.tier_spec.priority_class,
                    status=JobStatus.SUCCEEDED,
                    timeout_seconds=60,
                    finished_at=timezone.now(),
                    progress=100,
                ).pk
            )
            for _ in range(POLLED_JOBS)
        ]
        for tier, account in accounts.items()
    }
    return {
        "tokens": tokens,
        "app": {"slug": app.slug, "app_key": app.app_key, "runtime_version": "1.0.0"},
        "bundles": bundles,
        "codepush": deployment_keys,
        "jobs": polled,
        "staff": _staff_session(),
        "submit_account": accounts[Tier.ENTERPRISE].slug,
    }
