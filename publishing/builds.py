"""Build requests: from an API body to a queued job of the right kind."""

from django.utils import timezone

from buildhub.errors import ServiceError
from builds.engine.submit import submit_job
from publishing.choices import SourceState
from publishing.models import App, SourceUpload

BUILD_KINDS = {
    "ota": "build.ota",
    "expo": "build.expo",
    "flutter": "build.flutter",
    "flutterflow": "build.flutterflow",
}


def request_build(
    account, data: dict, *, idempotency_key="", submitted_by="", staff=False, request_meta=None
):
    """Queue a build of one of the account's apps; returns ``(job, created)``."""
    app = App.objects.filter(account=account, slug=data["app"]).first()
    if app is None:
        raise ServiceError(f"This account has no app {data['app']!r}.", fields={"app": "unknown"})
    if app.platforms and data["platform"] not in app.platforms:
        raise ServiceError(
            f"{app.slug} is built for {', '.join(app.platforms)}, not {data['platform']}.",
            fields={"platform": "not a platform of this app"},
        )
    source = data.get("source")
    if source and "upload" in source:
        upload = SourceUpload.objects.filter(pk=source["upload"], account=account, app=app).first()
        if upload is None:
            raise ServiceError(
                "No such source upload for this app.", fields={"source": "unknown upload"}
            )
        if upload.state != SourceState.READY:
            raise ServiceError(
                "This source upload is not complete: send the archive with its form, then POST "
                f"to /api/v1/apps/{app.slug}/sources/{upload.pk}/complete/.",
                fields={"source": "upload not completed"},
            )
        if upload.expires_at <= timezone.now():
            raise ServiceError(
                "This source upload has expired; upload the source again.",
                fields={"source": "expired upload"},
            )
    params = {
        "app_id": app.pk,
        "app": app.slug,
        "target": data["target"],
        "platform": data["platform"],
        "stage": data["stage"],
        "provider": data["provider"],
        "channel": data["channel"],
        "dry_run": data["dry_run"],
    }
    if source:
        params["source"] = source
    return submit_job(
        account,
        BUILD_KINDS[data["target"]],
        params,
        timeout_minutes=data.get("timeout_minutes"),
        idempotency_key=idempotency_key,
        submitted_by=submitted_by,
        staff=staff,
        request_meta={**(request_meta or {}), "app_name": app.name},
    )
