"""Versions, the publish workflow, rollback and the device update check."""

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages
from django.db import transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from buildhub import metrics
from buildhub.errors import ServiceError
from buildhub.internals import s3_object_key
from buildhub.storage import storage_unavailable_as_503
from builds.choices import JobStatus
from builds.engine.exceptions import JobFailed
from builds.engine.submit import submit_job
from builds.models import Job
from publishing import edge, packages
from publishing.artifacts import CHUNK, open_artifact, signed_file_url
from publishing.choices import ArtifactKind, Environment, FailureAction, VersionStatus
from publishing.models import App, Artifact, Release, Version

PUBLISH_KIND = "publish"
OTA_KIND = "build.ota"
MANIFEST_NAME = "release.json"


def manifest_key(env: str, app: App) -> str:
    return f"{env}/{app.account.slug}/{app.slug}/{MANIFEST_NAME}"


# --- versions ----------------------------------------------------------------------------
@transaction.atomic
def create_version(app: App, job_ids: list) -> Version:
    """The next version of ``app`` from succeeded OTA builds of it (e.g. one per platform)."""
    if not job_ids:
        raise ServiceError("Name at least one build.", fields={"build": "required"})
    jobs = list(Job.objects.filter(pk__in=job_ids, account=app.account, kind=OTA_KIND))
    found = {str(job.pk) for job in jobs}
    missing = [str(job_id) for job_id in job_ids if str(job_id) not in found]
    if missing:
        raise ServiceError(
            f"No OTA build {missing[0]} of this account.", fields={"build": "unknown"}
        )
    for job in jobs:
        if job.params.get("app_id") != app.pk:
            raise ServiceError(f"Build {job.pk} is of another app.", fields={"build": "other app"})
        if job.status != JobStatus.SUCCEEDED:
            raise ServiceError(
                f"Build {job.pk} has not succeeded (it is {job.status}).",
                fields={"build": "not succeeded"},
            )
    bundles = list(
        Artifact.objects.filter(job__in=jobs, kind=ArtifactKind.OTA_BUNDLE, deleted_at__isnull=True)
    )
    platforms = [bundle.platform for bundle in bundles]
    if len(platforms) != len(set(platforms)):
        raise ServiceError(
            "Two builds are for the same platform.", fields={"build": "duplicate platform"}
        )
    if len(bundles) != len(jobs):
        raise ServiceError("A build has no bundle (expired?).", fields={"build": "no bundle"})
    number = (
        App.objects.select_for_update().filter(pk=app.pk).aggregate(n=Max("versions__number"))["n"]
        or 0
    ) + 1
    channel = jobs[0].params.get("channel", "production")
    version = Version.objects.create(
        app=app,
        number=number,
        channel=channel,
        status=VersionStatus.READY,
        runtime_version=runtime_version_of(app, jobs),
    )
    version.assets.set(bundles)
    version.builds.set(jobs)
    return version


def runtime_version_of(app: App, jobs: list[Job]) -> str:
    """The one runtime version a version's builds were made for (each build records the one
    its app.json or the app gave); refused when there is none or they differ."""
    found = {(job.result or {}).get("runtime_version") or app.runtime_version: job for job in jobs}
    if len(found) > 1:
        listed = ", ".join(
            f"{value or 'none'} ({job.params.get('platform', '?')})"
            for value, job in sorted(found.items())
        )
        raise ServiceError(
            f"The builds were made for different runtime versions: {listed}.",
            fields={"build": "different runtime versions"},
        )
    [value] = found
    if not value:
        raise ServiceError(
            "No device could receive this version: its builds have no runtime version. Set "
            "expo.runtimeVersion in the app's app.json (or the app's runtime_version in "
            "BuildHub) and build again.",
            fields={"build": "no runtime version"},
        )
    return value


# --- publish -----------------------------------------------------------------------------
@transaction.atomic
def request_publish(
    version: Version,
    env: str,
    *,
    submitted_by: str = "",
    staff=False,
    idempotency_key="",
    mandatory=False,
    rollout_percent=100,
    target_binary_range="*",
):
    """Queue the publish job; the version is ``publishing`` until the job ends.

    ``mandatory``, ``rollout_percent`` and ``target_binary_range`` (the app binaries CodePush
    clients take it on) become the release's."""
    if env not in Environment.values:
        raise ServiceError(
            f"target_environment must be one of {', '.join(Environment.values)}.",
            fields={"target_environment": "invalid"},
        )
    previous = Version.objects.filter(pk=version.pk).values_list("status", flat=True).get()
    if previous not in (VersionStatus.READY, VersionStatus.PUBLISHED, VersionStatus.FAILED):
        raise ServiceError(
            f"Version {version.number} is {previous}; "
            "only ready or published versions can be published.",
            code="conflict",
            status=409,
        )
    if not version.runtime_version:
        raise ServiceError(
            f"Version {version.number} has no runtime version, so no device could receive it: "
            "set the app's runtime_version (or app.json's expo.runtimeVersion), build and "
            "create a version again.",
            fields={"target_environment": "no device could match"},
        )
    job, created = submit_job(
        version.app.account,
        PUBLISH_KIND,
        {
            "version_id": version.pk,
            "env": env,
            "previous_status": previous,
            "mandatory": bool(mandatory),
            "rollout_percent": int(rollout_percent),
            "target_binary_range": target_binary_range,
        },
        submitted_by=submitted_by,
        staff=staff,
        idempotency_key=idempotency_key,
    )
    if created:
        Version.objects.filter(pk=version.pk).update(status=VersionStatus.PUBLISHING)
    return job, created


def _hash_stored(artifact: Artifact) -> str:
    digest = hashlib.sha256()
    with open_artifact(artifact) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(version: Version, env: str, assets: list[Artifact], request_base="") -> dict:
    published_at = timezone.now()
    bundles = {
        asset.platform: {
            "artifact": str(asset.pk),
            "url": signed_file_url(asset) if asset.visibility == "private" else public_url(asset),
            "sha256": asset.sha256,
            "size": asset.size,
        }
        for asset in assets
        if asset.kind == ArtifactKind.OTA_BUNDLE
    }
    return {
        "app": version.app.slug,
        "version": version.number,
        "runtime_version": version.runtime_version,
        "channel": version.channel,
        "env": env,
        "bundles": bundles,
        "assets": [
            {
                "artifact": str(a.pk),
                "kind": a.kind,
                "platform": a.platform,
                "sha256": a.sha256,
                "size": a.size,
            }
            for a in assets
        ],
        "published_at": published_at.isoformat().replace("+00:00", "Z"),
    }


def validate_manifest(manifest: dict) -> None:
    required = {
        "app",
        "version",
        "runtime_version",
        "channel",
        "env",
        "bundles",
        "assets",
        "published_at",
    }
    missing = required - set(manifest)
    if missing:
        raise JobFailed(f"release.json lacks {', '.join(sorted(missing))}")
    if not manifest["bundles"]:
        raise JobFailed("release.json has no bundle")
    for platform, bundle in manifest["bundles"].items():
        if (
            len(bundle.get("sha256", "")) != 64
            or not bundle.get("url")
            or bundle.get("size", 0) <= 0
        ):
            raise JobFailed(f"release.json's {platform} bundle is incomplete")


def public_url(asset: Artifact) -> str:
    return reverse("bundle-download", kwargs={"artifact_id": asset.pk})


def write_atomically(key: str, content: bytes) -> str:
    """Replace ``key`` in public storage in one step: readers see the old or the new file."""
    storage = storages["default"]
    if isinstance(storage, FileSystemStorage):
        target = Path(storage.path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
            handle.write(content)
        os.replace(handle.name, target)
        return key
    s3: Any = storage  # an S3Storage (django-storages has no type information)
    s3.bucket.Object(s3_object_key(s3, key)).put(  # an S3 PUT replaces the object whole
        Body=content, ContentType="application/json"
    )
    return key


def publish_executor(context):
    params = context.params
    version = Version.objects.select_related("app__account").get(pk=params["version_id"])
    env = params["env"]
    app = version.app
    try:
        context.progress(5, "Validating the version")
        if version.status not in (VersionStatus.PUBLISHING, VersionStatus.READY):
            raise JobFailed(f"version {version.number} is {version.status}, not ready to publish")
        assets = list(version.assets.filter(deleted_at__isnull=True))
        if not assets or version.assets.count() != len(assets):
            raise JobFailed("an asset of this version has expired or is missing")
        for asset in assets:
            stored = _hash_stored(asset)
            if stored != asset.sha256:
                raise JobFailed(f"asset {asset.pk} in storage does not match its sha256")
            context.log(
                f"verified {asset.kind} {asset.platform} {asset.sha256[:12]} ({asset.size} bytes)"
            )
        context.progress(10, "Assets verified")
        made = packages.ensure_packages(context, version, assets)
        context.progress(20, "CodePush packages ready")

        manifest = build_manifest(version, env, assets)
        for platform, package in made.items():
            manifest["bundles"][platform]["codepush"] = package
        validate_manifest(manifest)
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        context.log(f"release.json: version {version.number}, {len(manifest['bundles'])} bundle(s)")
        context.progress(30, "release.json generated")

        staged_key = (
            f"{env}/{app.account.slug}/{app.slug}/releases/v{version.number}-{context.job.pk}.json"
        )
        with storage_unavailable_as_503():
            storages["default"].save(staged_key, ContentFile(body))
        context.log(f"staged {staged_key}")
        context.progress(50, "release.json uploaded")

        for asset in assets:  # bundles are addressed by id; verify each is still readable
            with open_artifact(asset) as handle:
                handle.read(1)
        context.progress(80, "Assets available")

        key = manifest_key(env, app)
        with transaction.atomic():
            updated = Version.objects.filter(
                pk=version.pk, status__in=[VersionStatus.PUBLISHING, VersionStatus.READY]
            ).update(status=VersionStatus.PUBLISHED, published_at=timezone.now())
            if not updated:
                raise JobFailed("the version changed while publishing")
            release = Release.objects.create(
                app=app,
                env=env,
                version=version,
                manifest_key=key,
                manifest=manifest,
                job=context.job,
                mandatory=params.get("mandatory", False),
                rollout_percent=params.get("rollout_percent", 100),
                target_binary_range=params.get("target_binary_range", "*"),
            )
            transaction.on_commit(lambda: invalidate_update_cache(app, env))
            transaction.on_commit(metrics.PUBLISHES.labels(env).inc)
        write_atomically(key, body)  # the switch: the previous release.json stays until now
        context.log(f"switched {key} to version {version.number}")
        context.progress(100, "Published")
        return {
            "release_url": storages["default"].url(key),
            "release_id": release.pk,
            "asset_count": len(assets),
            "published_at": manifest["published_at"],
        }
    except Exception:
        restore_version_status(version.pk, params.get("previous_status", VersionStatus.READY))
        raise


def restore_version_status(version_id, previous_status) -> None:
    Version.objects.filter(pk=version_id, status=VersionStatus.PUBLISHING).update(
        status=previous_status
    )


def on_publish_job_ended(sender, job, **kwargs):
    """A publish job that ended without success leaves the version as it was."""
    if job.kind == PUBLISH_KIND and "version_id" in job.params:
        restore_version_status(job.params["version_id"], job.params.get("previous_status", "ready"))


@transaction.atomic
def rollback(app: App, env: str) -> Release:
    """Go back to the release before the current one in ``env``.

    The rows change under their locks; ``release.json`` is written once that has committed,
    so no storage round trip holds the locks. Should that write fail, the rollback is undone
    and the caller told that storage is unavailable (503): nothing changed, try again.
    """
    current, previous = (
        list(
            Release.objects.select_for_update().filter(
                app=app, env=env, rolled_back_at__isnull=True
            )[:2]
        )
        + [None, None]
    )[:2]
    if current is None or previous is None:
        raise ServiceError(
            "There is no earlier release to roll back to.", code="conflict", status=409
        )
    rolled_back_at = timezone.now()
    Release.objects.filter(pk=current.pk).update(rolled_back_at=rolled_back_at)
    body = json.dumps(previous.manifest, indent=2, sort_keys=True).encode()
    # In this order: a failed write undoes the rollback before anyone counts or is told of it.
    transaction.on_commit(
        lambda: _write_rollback(app, env, previous.manifest_key, body, current, rolled_back_at)
    )
    transaction.on_commit(lambda: invalidate_update_cache(app, env))
    transaction.on_commit(metrics.ROLLBACKS.labels(env).inc)
    return previous


def _write_rollback(app: App, env: str, key: str, body: bytes, current, rolled_back_at) -> None:
    """After a rollback commits: the earlier release's release.json back in place, or, when
    storage fails, ``current`` live again (with a release health action that rolled it back:
    the next check-ins try again) and ServiceError 503."""
    try:
        with storage_unavailable_as_503():
            write_atomically(key, body)
    except ServiceError:
        undone = Release.objects.filter(pk=current.pk, rolled_back_at=rolled_back_at).update(
            rolled_back_at=None
        )
        if undone:
            Release.objects.filter(pk=current.pk, health_action=FailureAction.ROLLBACK).update(
                health_action="", health_action_at=None
            )
        invalidate_update_cache(app, env)
        raise


ROLL_BACK_TO_EMBEDDED = "rollBackToEmbedded"


@transaction.atomic
def rollback_to_embedded(app: App, env: str) -> Release:
    """Send the environment's devices back to the bundle embedded in their binary.

    A release of its own (a directive, not an update) on top of the live one: publishing
    again replaces it, and rolling back from it serves the release before it again.
    """
    current = (
        Release.objects.select_for_update()
        .filter(app=app, env=env, rolled_back_at__isnull=True)
        .select_related("version")
        .first()
    )
    if current is None:
        raise ServiceError(
            "Nothing is published in this environment: devices run their embedded bundle.",
            code="conflict",
            status=409,
        )
    if current.directive == ROLL_BACK_TO_EMBEDDED:
        return current
    now = timezone.now()
    manifest = {
        "app": app.slug,
        "env": env,
        "directive": ROLL_BACK_TO_EMBEDDED,
        "version": current.version.number,
        "runtime_version": current.version.runtime_version,
        "bundles": {},
        "published_at": now.isoformat().replace("+00:00", "Z"),
    }
    release = Release.objects.create(
        app=app,
        env=env,
        version=current.version,
        manifest_key=current.manifest_key,
        manifest=manifest,
        published_at=now,
        directive=ROLL_BACK_TO_EMBEDDED,
    )
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    transaction.on_commit(lambda: write_atomically(release.manifest_key, body))
    transaction.on_commit(lambda: invalidate_update_cache(app, env))
    transaction.on_commit(metrics.ROLLBACKS.labels(env).inc)
    return release


# --- update check ------------------------------------------------------------------------
def _key_digest(app_key: str) -> str:
    return hashlib.sha256(app_key.encode()).hexdigest()


def _cache_key(app_key: str, env) -> str:
    """The live release of an app's environment, by the key devices send (see below)."""
    return f"updates:{_key_digest(app_key)}:{env}"


def _app_key_cache_key(app_key: str) -> str:
    return f"appkey:{_key_digest(app_key)}"


def app_by_key(app_key: str) -> App | None:
    """The app a device names by its X-App-Key, cached: a warm update check needs no
    database connection, so concurrent devices do not each hold one."""
    key = _app_key_cache_key(app_key)
    app = cache.get(key)
    if app is None:
        app = App.objects.filter(app_key=app_key).first()
        if app is not None:
            cache.set(key, app, settings.UPDATE_CHECK_CACHE_SECONDS)
    return app


def forget_app_key(sender, instance: App, **kwargs) -> None:
    """An app renamed or deleted is looked up afresh (post_save / post_delete of App)."""
    cache.delete(_app_key_cache_key(instance.app_key))
    edge.forget(instance.app_key)


def invalidate_update_cache(app: App, env: str) -> None:
    cache.delete(_cache_key(app.app_key, env))
    edge.forget(app.app_key, env)


def update_check_state(app_key: str, env: str) -> tuple[App | None, dict | None]:
    """The app a device names and its live release in ``env``.

    Both come from the cache in one round trip when warm (the hot path of every device).
    """
    app_entry, release_entry = _app_key_cache_key(app_key), _cache_key(app_key, env)
    found = cache.get_many([app_entry, release_entry])
    app = found.get(app_entry) or app_by_key(app_key)
    if app is None:
        return None, None
    release = found.get(release_entry)
    if release is None:
        return app, current_release(app, env)
    return app, release or None


def current_release(app: App, env: str) -> dict | None:
    """The live release's manifest and rollout, from cache (one Redis read when warm)."""
    key = _cache_key(app.app_key, env)
    cached = cache.get(key)
    if cached is not None:
        return cached or None
    release = (
        Release.objects.filter(app=app, env=env, rolled_back_at__isnull=True)
        .order_by("-published_at")
        .first()
    )
    value = (
        {
            "id": release.pk,
            "manifest": release.manifest,
            "rollout_percent": release.rollout_percent,
            "mandatory": release.mandatory,
            "target_binary_range": release.target_binary_range,
            "directive": release.directive,
            # Live mandatory releases, for clients that must know whether one came after theirs.
            "mandatory_versions": sorted(
                Release.objects.filter(
                    app=app, env=env, rolled_back_at__isnull=True, mandatory=True
                ).values_list("version__number", flat=True)
            ),
        }
        if release
        else {}
    )
    cache.set(key, value, settings.UPDATE_CHECK_CACHE_SECONDS)
    return value or None


def in_rollout(release_id: int, device_id: str, percent: int) -> bool:
    """Deterministic per device: the same device always gets the same answer for a release."""
    if percent >= 100:
        return True
    bucket = int(hashlib.sha256(f"{release_id}:{device_id}".encode()).hexdigest()[:8], 16) % 100
    return bucket < percent


def check_for_update(
    release: dict | None,
    *,
    platform,
    runtime_version,
    channel="",
    current_sha="",
    device_id="",
) -> dict | None:
    """What a device should install from ``release`` (see update_check_state), or None."""
    if release is None or release.get("directive"):
        return None
    manifest = release["manifest"]
    bundle = manifest["bundles"].get(platform)
    if bundle is None or manifest["runtime_version"] != runtime_version:
        return None
    if channel and manifest["channel"] != channel:
        return None
    if current_sha and current_sha == bundle["sha256"]:
        return None
    if not in_rollout(release["id"], device_id or "", release["rollout_percent"]):
        return None
    return {
        "version": manifest["version"],
        "bundle_url": bundle["url"],
        "sha256": bundle["sha256"],
        "size": bundle["size"],
        "mandatory": release["mandatory"],
        "published_at": manifest["published_at"],
    }


def update_for_query(release: dict | None, query: dict, device_header: str = "") -> dict | None:
    """check_for_update for an update check's validated query; the device id comes from the
    query or else from the ``X-Device-Id`` header."""
    return check_for_update(
        release,
        platform=query["platform"],
        runtime_version=query["runtime_version"],
        channel=query["channel"],
        current_sha=query["current"],
        device_id=query["device"] or device_header,
    )
