"""The verbs of publishing: what its API views, admin actions and commands call.

Each checks what it is given and raises ServiceError, or returns what it made or queued;
the modules behind them hold the how (``releases``: versions, publish and rollback;
``codepush``: deployment keys; ``signing``: code signing keys; ``sources``: uploaded source;
``builds``: build requests).
"""

from builds.models import Account, Job
from publishing import builds, codepush, releases, signing, sources
from publishing.models import App, AppSigningKey, Deployment, Release, SourceUpload, Version


def create_version(app: App, build_ids: list) -> Version:
    """The next version of ``app`` from succeeded OTA builds of it (one per platform)."""
    return releases.create_version(app, build_ids)


def publish_version(
    version: Version,
    env: str,
    *,
    by: str = "",
    staff: bool = False,
    idempotency_key: str = "",
    mandatory: bool = False,
    rollout_percent: int = 100,
    target_binary_range: str = "*",
) -> tuple[Job, bool]:
    """Queue the job that publishes ``version`` to ``env``; ``(job, created)`` (not created:
    a repeated ``idempotency_key``). ``by``: who asked, kept on the job."""
    return releases.request_publish(
        version,
        env,
        submitted_by=by,
        staff=staff,
        idempotency_key=idempotency_key,
        mandatory=mandatory,
        rollout_percent=rollout_percent,
        target_binary_range=target_binary_range,
    )


def roll_back_release(app: App, env: str, *, to: str = "previous") -> Release:
    """Serve ``env``'s devices the release before the live one (``to="previous"``), or the
    bundle their binary embeds (``to="embedded"``); returns the release now live."""
    if to == "embedded":
        return releases.rollback_to_embedded(app, env)
    return releases.rollback(app, env)


def rotate_deployment_key(app: App, env: str, platform: str) -> Deployment:
    """A new CodePush deployment key; binaries with the old one get no more updates."""
    return codepush.rotate(app, env, platform)


def set_code_signing_key(
    app: App,
    *,
    key_id: str,
    private_key_pem: str | None = None,
    certificate_pem: str | None = None,
) -> AppSigningKey:
    """Keep an uploaded key and certificate, or (no key given) generate both; replaces the
    app's key."""
    if private_key_pem is not None:
        return signing.upload_key(app, private_key_pem, certificate_pem or "", key_id)
    return signing.generate_key(app, key_id)


def upload_source(app: App, uploaded_file) -> SourceUpload:
    """Check an uploaded source archive and keep it for the app's builds."""
    return sources.save_upload(app.account, app, uploaded_file)


def start_direct_upload(
    app: App, filename: str, size: int, sha256: str = ""
) -> tuple[SourceUpload, dict]:
    """A pending upload and the form that sends its archive straight to the bucket."""
    return sources.start_direct_upload(app.account, app, filename, size, sha256)


def complete_direct_upload(app: App, upload_id) -> SourceUpload:
    """Check a direct upload's archive in the bucket and make it usable by builds."""
    return sources.complete_direct_upload(app.account, app, upload_id)


def request_build(
    account: Account,
    data: dict,
    *,
    idempotency_key: str = "",
    by: str = "",
    staff: bool = False,
    request_meta: dict | None = None,
) -> tuple[Job, bool]:
    """Queue a build of one of the account's apps; ``(job, created)``."""
    return builds.request_build(
        account,
        data,
        idempotency_key=idempotency_key,
        submitted_by=by,
        staff=staff,
        request_meta=request_meta,
    )
