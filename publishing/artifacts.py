"""Artifacts in storage: upload with hash and expiry, signed downloads, the expiry sweeper."""

import datetime as dt
import hashlib
import mimetypes
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.core.files.storage import FileSystemStorage, storages
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from buildhub.errors import ServiceError
from buildhub.storage import storage_unavailable_as_503
from publishing.choices import ArtifactKind, Visibility
from publishing.models import Artifact, Release

SIGNING_SALT = "buildhub.artifact-download"
CHUNK = 1024 * 1024


def storage_for(visibility: str):
    return storages["private" if visibility == Visibility.PRIVATE else "default"]


def file_digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def store_file(
    path: Path,
    *,
    account,
    kind: str,
    key: str,
    job=None,
    app=None,
    platform: str = "",
    visibility: str = Visibility.PUBLIC,
    content_type: str = "",
    ttl: dt.timedelta | None = None,
    simulated: bool = False,
) -> Artifact:
    """Upload ``path`` under ``key`` and record it; sourcemaps always go to private storage."""
    if kind == ArtifactKind.SOURCEMAP:
        visibility = Visibility.PRIVATE
    sha256, size = file_digest(path)
    storage = storage_for(visibility)
    with open(path, "rb") as handle, storage_unavailable_as_503():
        stored_key = storage.save(key, handle)
    return Artifact.objects.create(
        account=account,
        job=job,
        app=app,
        kind=kind,
        platform=platform,
        storage_key=stored_key,
        visibility=visibility,
        size=size,
        sha256=sha256,
        content_type=content_type
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream",
        expires_at=timezone.now() + (ttl or dt.timedelta(days=settings.ARTIFACT_TTL_DAYS)),
        simulated=simulated,
    )


def record_url(
    *, account, kind: str, url: str, job=None, app=None, platform="", ttl=None, simulated=False
) -> Artifact:
    return Artifact.objects.create(
        account=account,
        job=job,
        app=app,
        kind=kind,
        platform=platform,
        url=url,
        visibility=Visibility.PRIVATE,
        simulated=simulated,
        expires_at=timezone.now() + (ttl or dt.timedelta(days=settings.ARTIFACT_TTL_DAYS)),
    )


def ensure_available(artifact: Artifact) -> None:
    if artifact.deleted_at is not None or (
        artifact.expires_at is not None and artifact.expires_at <= timezone.now()
    ):
        raise ServiceError(
            "This artifact has expired and its file was removed.", code="gone", status=410
        )


def signed_file_url(artifact: Artifact, request=None) -> str:
    """A link valid for SIGNED_URL_SECONDS to this artifact's bytes."""
    storage = storage_for(artifact.visibility)
    if artifact.url:
        return artifact.url
    if not isinstance(storage, FileSystemStorage):
        if artifact.visibility == Visibility.PUBLIC:
            return storage.url(artifact.storage_key)
        return storage.url(artifact.storage_key, expire=settings.SIGNED_URL_SECONDS)
    token = signing.dumps(str(artifact.pk), salt=SIGNING_SALT)
    path = reverse("artifact-file", kwargs={"artifact_id": artifact.pk}) + f"?token={token}"
    return request.build_absolute_uri(path) if request is not None else path


def artifact_for_token(artifact_id, token: str) -> Artifact:
    """The artifact a signed file link names; 403 when the link is expired or forged."""
    try:
        signed_id = signing.loads(token, salt=SIGNING_SALT, max_age=settings.SIGNED_URL_SECONDS)
    except signing.SignatureExpired:
        raise ServiceError(
            "This download link has expired.", code="link_expired", status=403
        ) from None
    except signing.BadSignature:
        raise ServiceError(
            "This download link is not valid.", code="link_invalid", status=403
        ) from None
    if signed_id != str(artifact_id):
        raise ServiceError("This download link is not valid.", code="link_invalid", status=403)
    artifact = Artifact.objects.filter(pk=artifact_id).first()
    if artifact is None:
        raise ServiceError("Not found.", code="not_found", status=404)
    ensure_available(artifact)
    return artifact


def job_outputs(job) -> list[dict]:
    """The job's artifacts with a link an operator can open (signed, short-lived), for the
    job's admin page."""
    return [
        {"artifact": artifact, "link": signed_file_url(artifact)}
        for artifact in Artifact.objects.filter(job=job, deleted_at__isnull=True).order_by(
            "created_at"
        )
    ]


def open_artifact(artifact: Artifact):
    """The artifact's file, opened now (on S3 that asks the bucket): storage that cannot be
    reached answers 503, a file gone from it 410, never a 500."""
    with storage_unavailable_as_503():
        try:
            return storage_for(artifact.visibility).open(artifact.storage_key, "rb")
        except FileNotFoundError:
            raise ServiceError(
                "This artifact's file is no longer in storage.", code="gone", status=410
            ) from None


def sweep_expired_artifacts(now=None) -> int:
    """Delete files of expired artifacts, except those a live release still serves."""
    now = now or timezone.now()
    live = Release.objects.filter(rolled_back_at__isnull=True).values("version__assets")
    expired = Artifact.objects.filter(deleted_at__isnull=True, expires_at__lte=now).exclude(
        Q(pk__in=live)
    )
    removed = 0
    for artifact in expired.iterator():
        if artifact.storage_key:
            storage_for(artifact.visibility).delete(artifact.storage_key)
        Artifact.objects.filter(pk=artifact.pk, deleted_at__isnull=True).update(deleted_at=now)
        removed += 1
    return removed
