"""Source intake: uploaded .tar.gz/.zip archives and git repositories, made safe to build.

The archive walk (publishing.archives) validates an upload at the edge, writing nothing,
and extracts it into a job's workspace inside the build sandbox. Git sources are checked
(scheme, host, ref) at submission and again before the clone, which runs in the sandbox.
"""

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.storage import storages
from django.utils import timezone

from buildhub.errors import ServiceError
from buildhub.storage import is_bucket, presigned_post, storage_unavailable_as_503
from builds.choices import JobStatus, Tier
from builds.engine import sandbox
from builds.engine.exceptions import JobFailed
from builds.models import Account, Job
from builds.tiers import MB
from publishing import archives
from publishing.archives import TAR_GZ, ZIP, ArchiveRefused, Caps, detect_format, unpack
from publishing.artifacts import CHUNK
from publishing.choices import SourceState
from publishing.hosts import private_host
from publishing.models import App, SourceUpload

SOURCE_DIR = "source"


# --- uploads -----------------------------------------------------------------------------
def upload_limit_error(account: Account, size: int) -> ServiceError:
    limits = account.effective_limits()
    return ServiceError(
        f"The upload is {size / MB:.1f} MB; the {Tier(account.tier).label} tier allows "
        f"{limits.max_source_upload_mb} MB.",
        code="payload_too_large",
        status=413,
        fields={"file": f"at most {limits.max_source_upload_mb} MB"},
    )


def check_upload_size(account: Account, size: int) -> None:
    if size > account.effective_limits().max_source_upload_bytes:
        raise upload_limit_error(account, size)


def save_upload(account: Account, app: App, uploaded_file) -> SourceUpload:
    """Validate an uploaded archive (size, format, every entry) and keep it for builds."""
    if uploaded_file is None:
        raise ServiceError(
            "Send the archive as the multipart field 'file'.", fields={"file": "required"}
        )
    check_upload_size(account, uploaded_file.size)
    uploaded_file.seek(0)
    sha256, fmt = inspect_archive(uploaded_file)
    upload_id = uuid.uuid4()
    uploaded_file.seek(0)
    with storage_unavailable_as_503():
        key = storages["private"].save(source_key(account, app, upload_id, fmt), uploaded_file)
    return SourceUpload.objects.create(
        id=upload_id,
        account=account,
        app=app,
        storage_key=key,
        filename=(uploaded_file.name or "")[:255],
        size=uploaded_file.size,
        sha256=sha256,
        expires_at=timezone.now() + dt.timedelta(days=settings.SOURCE_TTL_DAYS),
    )


def source_key(account: Account, app: App, upload_id: uuid.UUID, fmt: str) -> str:
    return f"sources/{account.slug}/{app.slug}/{upload_id}.{fmt}"


def inspect_archive(archive, expected_format: str | None = None) -> tuple[str, str]:
    """Read an archive once for its sha256, then walk every entry (writing nothing); return
    ``(sha256, format)`` or raise the refusal a client sees."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: archive.read(CHUNK), b""):
        digest.update(chunk)
    archive.seek(0)
    try:
        fmt = detect_format(archive.read(4))
        if expected_format and fmt != expected_format:
            raise ArchiveRefused(f"the file is a {fmt} archive; its name says {expected_format}")
        archive.seek(0)
        summary = unpack(archive, fmt, None)
    except ArchiveRefused as refusal:
        raise ServiceError(
            str(refusal), code="invalid_archive", fields={"file": str(refusal)}
        ) from None
    if summary["files"] == 0:
        raise ServiceError(
            "The archive is empty.", code="invalid_archive", fields={"file": "empty"}
        )
    return digest.hexdigest(), fmt


# --- direct uploads: the client sends the archive to the bucket, never through a web process
def format_from_name(filename: str) -> str:
    name = filename.lower()
    if name.endswith(".zip"):
        return ZIP
    if name.endswith((".tar.gz", ".tgz")):
        return TAR_GZ
    raise ServiceError(
        f"{filename!r} is not a .tar.gz, .tgz or .zip file name.",
        code="invalid_archive",
        fields={"filename": "must end in .tar.gz, .tgz or .zip"},
    )


def start_direct_upload(
    account: Account, app: App, filename: str, size: int, sha256: str = ""
) -> tuple[SourceUpload, dict]:
    """Make a pending upload and the form that sends exactly ``size`` bytes of it straight to
    the private bucket (S3 storage only); ``complete_direct_upload`` then checks it."""
    storage = storages["private"]
    if not is_bucket(storage):
        raise ServiceError(
            "This server keeps sources on its own disk: send the archive to "
            f"/api/v1/apps/{app.slug}/sources/ as the multipart field 'file'.",
            code="direct_upload_unavailable",
            status=409,
        )
    fmt = format_from_name(filename)
    check_upload_size(account, size)
    upload_id = uuid.uuid4()
    name = source_key(account, app, upload_id, fmt)
    seconds = settings.SOURCE_DIRECT_UPLOAD_SECONDS
    with storage_unavailable_as_503():
        form = presigned_post(storage, name, size=size, expires_in=seconds)
    upload = SourceUpload.objects.create(
        id=upload_id,
        account=account,
        app=app,
        storage_key=name,
        filename=filename[:255],
        size=size,
        sha256=sha256.lower(),
        state=SourceState.PENDING,
        # a pending upload lives as long as its form; completing it gives it the usual TTL
        expires_at=timezone.now() + dt.timedelta(seconds=seconds),
    )
    return upload, form


def complete_direct_upload(account: Account, app: App, upload_id) -> SourceUpload:
    """Check what reached the bucket as ``save_upload`` checks a posted file; a refused
    archive is deleted and the upload stays pending (its form can send another)."""
    upload = SourceUpload.objects.filter(pk=upload_id, account=account, app=app).first()
    if upload is None:
        raise ServiceError("No such source upload.", code="not_found", status=404)
    if upload.state == SourceState.READY:
        return upload
    if upload.expires_at <= timezone.now():
        raise ServiceError(
            "This upload's form has expired; start a new upload.", code="expired", status=410
        )
    storage = storages["private"]
    with storage_unavailable_as_503():
        if not storage.exists(upload.storage_key):
            raise ServiceError(
                "The archive has not reached storage: send it with the upload's form first.",
                code="not_uploaded",
                status=409,
            )
        try:
            with storage.open(upload.storage_key, "rb") as stored:
                sha256, _ = inspect_archive(stored, upload_format(upload))
            if upload.sha256 and sha256 != upload.sha256:
                raise ServiceError(
                    f"The archive's sha256 is {sha256}, not the {upload.sha256} announced.",
                    code="checksum_mismatch",
                    fields={"sha256": "does not match the archive"},
                )
        except ServiceError:
            storage.delete(upload.storage_key)
            raise
    upload.sha256 = sha256
    upload.state = SourceState.READY
    upload.expires_at = timezone.now() + dt.timedelta(days=settings.SOURCE_TTL_DAYS)
    upload.save(update_fields=["sha256", "state", "expires_at"])
    return upload


def sweep_expired_sources(now=None) -> int:
    """Delete expired uploads and their files, except those a queued or running build names."""
    now = now or timezone.now()
    waiting = {
        str(source.get("upload"))
        for source in Job.objects.filter(
            status__in=[JobStatus.QUEUED, JobStatus.RUNNING], params__source__has_key="upload"
        ).values_list("params__source", flat=True)
    }
    removed = 0
    for upload in SourceUpload.objects.filter(expires_at__lte=now).iterator():
        if str(upload.pk) in waiting:
            continue
        storages["private"].delete(upload.storage_key)
        SourceUpload.objects.filter(pk=upload.pk).delete()
        removed += 1
    return removed


def upload_format(upload: SourceUpload) -> str:
    return ZIP if upload.storage_key.endswith(".zip") else TAR_GZ


# --- git ---------------------------------------------------------------------------------
SCP_LIKE = re.compile(
    r"^(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$"
)
HEX_SHA = re.compile(r"^[0-9a-f]{7,64}$")
BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def validate_git_ref(ref: str) -> str:
    """A branch, tag or commit in ``git check-ref-format`` terms; empty means HEAD."""
    if ref == "" or HEX_SHA.match(ref):
        return ref
    if (
        len(ref) > 255
        or BAD_REF.search(ref)
        or ref.startswith(("-", "/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or ref == "@"
        or any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/"))
    ):
        raise ServiceError(f"{ref!r} is not a valid git ref.", fields={"source": "invalid ref"})
    return ref


def git_host(url: str) -> str:
    scp = SCP_LIKE.match(url)
    return scp.group("host") if scp else (urlsplit(url).hostname or "")


def validate_git_url(url: str) -> str:
    """https:// or ssh:// (or ``user@host:path``) to a public host; never a local path."""

    def refuse(reason: str):
        return ServiceError(f"Git source refused: {reason}", fields={"source": reason})

    if not url or len(url) > 2000 or re.search(r"[\x00-\x20\x7f]", url):
        raise refuse("the URL is empty, too long or has spaces or control characters.")
    protocols = set(settings.SOURCE_GIT_PROTOCOLS)
    scp = SCP_LIKE.match(url)
    if scp:
        scheme, host = "ssh", scp.group("host")
    else:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        if scheme not in {"https", "http", "ssh"}:
            raise refuse("use an https:// or ssh:// URL (file://, local paths are not allowed).")
        if scheme in ("https", "http") and (parts.username or parts.password):
            raise refuse("the URL must not carry credentials.")
        if not parts.path.strip("/"):
            raise refuse("the URL names no repository.")
        if (parts.username or "").startswith("-"):
            raise refuse("the URL's user name must not start with '-'.")
    if scheme not in protocols:
        raise refuse(f"{scheme} URLs are not allowed here; use {' or '.join(sorted(protocols))}.")
    if not host or host.startswith("-"):
        raise refuse("the URL names no host.")
    if not settings.SOURCE_GIT_ALLOW_PRIVATE_HOSTS and private_host(host, resolve=False):
        raise refuse(f"{host} is a local or private address.")
    return url


def shallow_clone(context, url: str, ref: str, dest: Path) -> Path:
    """Fetch one commit of ``url`` into ``dest`` with the job's timeout and cancel."""
    validate_git_url(url)
    validate_git_ref(ref)
    if not settings.SOURCE_GIT_ALLOW_PRIVATE_HOSTS and private_host(git_host(url), resolve=True):
        raise JobFailed(f"git source refused: {git_host(url)} resolves to a private address")
    git = shutil.which("git")
    if git is None:
        raise JobFailed("git is not installed on this worker")
    home = context.workspace / ".git-home"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_ALLOW_PROTOCOL": ":".join(settings.SOURCE_GIT_PROTOCOLS),
        "GIT_SSH_COMMAND": (
            f"ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
            f"-o UserKnownHostsFile={home / 'known_hosts'}"
        ),
    }
    dest.mkdir(parents=True, exist_ok=True)
    context.log(f"source: shallow clone of {url} at {ref or 'HEAD'}")
    try:
        context.run([git, "init", "--quiet", dest], env=env)
        context.run([git, "-C", dest, "remote", "add", "origin", url], env=env)
        context.run(  # the one git step with the network; the host was checked above
            [git, "-C", dest, "fetch", "--depth", "1", "--no-tags", "origin", ref or "HEAD"],
            env=env,
            network=True,
        )
        context.run([git, "-C", dest, "checkout", "--quiet", "FETCH_HEAD"], env=env)
    except JobFailed as failure:
        raise JobFailed(f"git clone of {url} at {ref or 'HEAD'} failed ({failure})") from None
    shutil.rmtree(dest / ".git", ignore_errors=True)
    return dest


# --- into a job's workspace ---------------------------------------------------------------
def materialize(context, source_params) -> Path:
    """Put the job's source into its workspace and return the tree's root directory.

    ``source_params`` is ``{"upload": id}`` or ``{"git": url, "ref": ref}``. A bad source
    fails the job without retries, saying what is wrong with it.
    """
    if not source_params:
        raise JobFailed("this build needs a source: an upload or a git URL")
    dest = context.workspace / SOURCE_DIR
    if os.path.lexists(dest):
        raise JobFailed("the workspace has a source already")
    dest.mkdir()
    if "upload" in source_params:
        return _materialize_upload(context, source_params["upload"], dest)
    if "git" in source_params:
        try:
            return _single_root(
                shallow_clone(context, source_params["git"], source_params.get("ref", ""), dest)
            )
        except ServiceError as refusal:
            raise JobFailed(refusal.message) from None
    raise JobFailed('source must be {"upload": id} or {"git": url, "ref": ref}')


def _materialize_upload(context, upload_id, dest: Path) -> Path:
    upload = SourceUpload.objects.filter(pk=upload_id, account_id=context.job.account_id).first()
    if upload is None:
        raise JobFailed(f"source upload {upload_id} does not exist for this account")
    if upload.state != SourceState.READY:
        raise JobFailed(f"source upload {upload_id} was never completed")
    if upload.expires_at <= timezone.now():
        raise JobFailed(
            f"source upload {upload_id} expired on {upload.expires_at:%Y-%m-%d}; upload it again"
        )
    fmt = upload_format(upload)
    archive = context.workspace / f"source-archive.{fmt}"
    digest = hashlib.sha256()
    with (
        storage_unavailable_as_503(),
        storages["private"].open(upload.storage_key, "rb") as stored,
        open(archive, "wb") as out,
    ):
        while chunk := stored.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != upload.sha256:
        raise JobFailed(f"source upload {upload_id} in storage does not match its sha256")
    context.log(f"source: upload {upload_id} ({upload.size} bytes, {fmt}, {upload.sha256[:12]})")
    try:
        summary = extract_in_sandbox(context, archive, fmt, dest)
    finally:
        archive.unlink(missing_ok=True)
    context.log(f"source: {summary['files']} entries, {summary['bytes']} bytes unpacked")
    return _single_root(dest)


def extract_in_sandbox(context, archive: Path, fmt: str, dest: Path) -> dict:
    """Run the archive walk (publishing/archives.py) as a step of its own: in the sandbox,
    without the network, able to write only the job's workspace."""
    caps = Caps.from_settings()
    outcome: dict = {}

    def read(line: str) -> None:
        kind, _, detail = line.rstrip("\n").partition(" ")
        if kind == "ARCHIVE_OK":
            outcome["summary"] = json.loads(detail)
        elif kind == "ARCHIVE_REFUSED":
            outcome["refused"] = detail

    command, readable = sandbox.python_script(
        Path(archives.__file__), fmt, caps.max_bytes, caps.max_entries, archive, dest
    )
    code = context.run(command, on_line=read, check=False, readable=readable)
    if "refused" in outcome:
        raise JobFailed(f"source archive refused: {outcome['refused']}")
    if code != 0 or "summary" not in outcome:
        raise JobFailed(f"extracting the source archive failed (exit {code})")
    return outcome["summary"]


def _single_root(dest: Path) -> Path:
    """An archive of one folder (``myapp/...``, as GitHub makes them) builds from that folder."""
    children = list(dest.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return dest
