"""A CodePush-compatible update server for ``react-native-code-push`` and its forks.

An app binary carries a deployment key (one per app, environment and platform) and the
server URL. Its update check (``GET /v0.1/public/codepush/update_check``, or the legacy
``/updateCheck``) names the key, the binary's version and the package it runs; the answer is
always a 200 (the client gives up on a server that fails it once) with ``update_info``: the
live release of the key's environment when the binary's version is in the release's
``target_binary_range``, the device is in the rollout (the same sticky bucket as the other
update APIs) and it does not run that package yet. A release is mandatory when it, or any
release newer than the one the device runs, was published as mandatory.
"""

import hashlib
import logging
import re
import secrets

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from buildhub.errors import ServiceError
from publishing import checkins, releases, semver
from publishing.choices import Environment
from publishing.models import App, Deployment, UpdateReport

logger = logging.getLogger("buildhub.codepush")

LABEL = re.compile(r"^v(\d{1,9})$")
DEPLOY_STATUSES = {"DeploymentSucceeded", "DeploymentFailed"}


def _cache_key(key: str) -> str:
    return f"codepush:deployment:{hashlib.sha256(key.encode()).hexdigest()}"


def deployment_by_key(key: str) -> dict | None:
    """``{app_key, app_id, env, platform}`` of a deployment key (cached like app keys)."""
    if not key or len(key) > 64:
        return None
    cached = cache.get(_cache_key(key))
    if cached is not None:
        return cached or None
    row = (
        Deployment.objects.filter(key=key)
        .values("app_id", "app__app_key", "env", "platform")
        .first()
    )
    value = (
        {
            "app_id": row["app_id"],
            "app_key": row["app__app_key"],
            "env": row["env"],
            "platform": row["platform"],
        }
        if row
        else {}
    )
    cache.set(_cache_key(key), value, settings.UPDATE_CHECK_CACHE_SECONDS)
    return value or None


def deployments_of(app: App) -> list[Deployment]:
    """The app's deployments, one per environment and platform (made on first sight)."""
    with transaction.atomic():
        for env in Environment.values:
            for platform in app.platforms:
                Deployment.objects.get_or_create(app=app, env=env, platform=platform)
    return list(Deployment.objects.filter(app=app, platform__in=app.platforms))


def rotate(app: App, env: str, platform: str) -> Deployment:
    """A new key for a deployment; binaries with the old one get no more updates."""
    deployment = next(
        (d for d in deployments_of(app) if d.env == env and d.platform == platform), None
    )
    if deployment is None:
        raise ServiceError("No such deployment.", code="not_found", status=404)
    old = deployment.key
    deployment.key = f"dk_{secrets.token_urlsafe(24)}"
    deployment.rotated_at = timezone.now()
    deployment.save(update_fields=["key", "rotated_at"])
    transaction.on_commit(lambda: cache.delete(_cache_key(old)))
    return deployment


def no_update(**more) -> dict:
    return {
        "is_available": False,
        "update_app_version": False,
        "should_run_binary_version": False,
        **more,
    }


def check_state(query: dict) -> tuple[dict | None, App | None, dict | None]:
    """The deployment a check's key names, its app and its environment's live release."""
    deployment = deployment_by_key(str(query.get("deployment_key", "")))
    if deployment is None:
        return None, None, None
    app, release = releases.update_check_state(deployment["app_key"], deployment["env"])
    return deployment, app, release


def update_info(deployment: dict | None, release: dict | None, query: dict, package_url) -> dict:
    """The ``update_info`` for a check's query, given its deployment and live release."""
    version = semver.parse_version(str(query.get("app_version", "")))
    if deployment is None or version is None:
        return no_update()
    runs_update = bool(query.get("package_hash") or query.get("label"))
    if not release or release.get("directive"):  # nothing, or back to the binary's bundle
        return no_update(should_run_binary_version=runs_update)
    bundle = release["manifest"]["bundles"].get(deployment["platform"]) or {}
    package = bundle.get("codepush")
    if package is None:
        return no_update()
    binary_range = release.get("target_binary_range", "*")
    companion = str(query.get("is_companion", "")).lower() == "true"
    if not companion and not semver.satisfies(version, binary_range):
        if semver.older_than_range(version, binary_range):
            return no_update(update_app_version=True, target_binary_range=binary_range)
        return no_update()
    if query.get("package_hash") == package["package_hash"]:
        return no_update()
    client_id = str(query.get("client_unique_id", ""))[:128]
    if not releases.in_rollout(release["id"], client_id, release["rollout_percent"]):
        return no_update()
    label = f"v{release['manifest']['version']}"
    return {
        "is_available": True,
        "is_mandatory": release["mandatory"] or _mandatory_since(query, release),
        "download_url": package_url(package["artifact"]),
        "description": "",
        "label": label,
        "package_hash": package["package_hash"],
        "package_size": package["size"],
        "target_binary_range": binary_range,
        "update_app_version": False,
        "should_run_binary_version": False,
    }


def _mandatory_since(query: dict, release: dict) -> bool:
    """Whether a mandatory release came after the one the device runs (up to the latest)."""
    running = LABEL.match(str(query.get("label", "")))
    since = int(running.group(1)) if running else 0
    latest = release["manifest"]["version"]
    return any(since < number <= latest for number in release.get("mandatory_versions", ()))


def record_report(kind: str, body: dict) -> None:
    """Keep a client's download or deploy report (unknown keys are ignored, still a 200);
    a deploy report also counts towards its release's health (publishing.checkins)."""
    deployment = deployment_by_key(str(body.get("deployment_key", "")))
    if deployment is None:
        return
    status = str(body.get("status", ""))
    if kind == "deploy":
        checkins.codepush_report(
            deployment["app_id"],
            deployment["env"],
            deployment["platform"],
            status,
            str(body.get("label", "")),
            str(body.get("client_unique_id", "")),
        )
    UpdateReport.objects.create(
        app_id=deployment["app_id"],
        env=deployment["env"],
        platform=deployment["platform"],
        kind=kind,
        status=status if status in DEPLOY_STATUSES else "",
        label=str(body.get("label", ""))[:64],
        app_version=str(body.get("app_version", ""))[:64],
        client_id=str(body.get("client_unique_id", ""))[:128],
        previous_label_or_app_version=str(body.get("previous_label_or_app_version", ""))[:64],
    )


# The legacy API's camelCase names for the same fields.
LEGACY_QUERY = {
    "deploymentKey": "deployment_key",
    "appVersion": "app_version",
    "packageHash": "package_hash",
    "label": "label",
    "clientUniqueId": "client_unique_id",
    "isCompanion": "is_companion",
    "status": "status",
    "previousLabelOrAppVersion": "previous_label_or_app_version",
    "previousDeploymentKey": "previous_deployment_key",
}
LEGACY_ANSWER = {
    "download_url": "downloadURL",
    "description": "description",
    "is_available": "isAvailable",
    "is_mandatory": "isMandatory",
    "target_binary_range": "appVersion",
    "label": "label",
    "package_hash": "packageHash",
    "package_size": "packageSize",
    "update_app_version": "updateAppVersion",
    "should_run_binary_version": "shouldRunBinaryVersion",
}


def from_legacy(values) -> dict:
    return {LEGACY_QUERY.get(name, name): value for name, value in values.items()}


def to_legacy(info: dict) -> dict:
    return {LEGACY_ANSWER.get(name, name): value for name, value in info.items()}
