"""Source intake: uploaded .tar.gz/.zip archives and git repositories, made safe to build.

An archive is read as a stream of entries and every entry is checked before anything is
written: no absolute paths, no ``..``, no devices or fifos, links only to places inside the
tree, and the bytes actually decompressed (not the sizes the headers claim) count against
``SOURCE_MAX_UNPACKED_MB`` and ``SOURCE_MAX_FILES``. The same walk validates an upload (writing
nothing) and extracts it into a job's workspace. Symbolic links are created last, after every
file, so no write can pass through one; a final check resolves each of them inside the tree.
"""

import datetime as dt
import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files.storage import storages
from django.utils import timezone

from buildhub.errors import ServiceError
from builds.choices import JobStatus, Tier
from builds.engine.runner import JobFailed
from builds.models import Account, Job
from builds.tiers import MB
from publishing.artifacts import CHUNK
from publishing.hosts import private_host
from publishing.models import App, SourceUpload

TAR_GZ, ZIP = "tar.gz", "zip"
MAX_PATH = 1024
MAX_NAME = 255
MAX_LINK_HOPS = 40
MAX_TAR_HEADER = 1024 * 1024  # pax/GNU long-name headers are read into memory whole
SOURCE_DIR = "source"


class ArchiveRefused(Exception):
    """The archive is unsafe or malformed; the message says why, for the customer."""


@dataclass(frozen=True)
class Caps:
    max_bytes: int
    max_entries: int

    @classmethod
    def from_settings(cls) -> "Caps":
        return cls(settings.SOURCE_MAX_UNPACKED_MB * MB, settings.SOURCE_MAX_FILES)


@dataclass
class Entry:
    """One archive member, reduced to what may be built from it."""

    kind: str  # "file", "dir", "symlink", "hardlink"
    path: PurePosixPath
    executable: bool = False
    link: str = ""  # symlink target, or the archive path a hard link names
    open: Callable | None = None  # file entries: a binary stream of the content


# --- format and names --------------------------------------------------------------------
def detect_format(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return TAR_GZ
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    raise ArchiveRefused("The file is not a .tar.gz or .zip archive.")


def safe_path(name: str) -> PurePosixPath | None:
    """The entry's path relative to the tree; None for the tree itself (``./``)."""
    if "\x00" in name:
        raise ArchiveRefused(f"The entry {name!r} has a NUL byte in its name.")
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        raise ArchiveRefused(f"The entry {name!r} has an absolute path.")
    parts = [part for part in normal.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"The entry {name!r} points outside the archive (..).")
    if len(normal) > MAX_PATH or any(len(part) > MAX_NAME for part in parts):
        raise ArchiveRefused(f"The entry {name[:80]!r}... has a name that is too long.")
    return PurePosixPath(*parts) if parts else None


def resolve_inside(path: PurePosixPath, links: dict[str, str]) -> PurePosixPath:
    """Where ``path`` leads once the archive's symlinks are followed; refuses leaving the tree."""
    resolved: list[str] = []
    pending = list(path.parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise ArchiveRefused(f"The link {str(path)!r} points outside the archive.")
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get("/".join(resolved))
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise ArchiveRefused(f"The links around {str(path)!r} form a loop.")
            if target.startswith("/"):
                raise ArchiveRefused(f"The link {str(path)!r} has an absolute target.")
            resolved.pop()
            pending = target.split("/") + pending
    return PurePosixPath(*resolved)


# --- readers -----------------------------------------------------------------------------
class LimitedReader:
    """A decompressed stream that refuses to deliver more than ``limit`` bytes."""

    def __init__(self, raw, limit: int, too_big: str):
        self.raw, self.limit, self.too_big, self.delivered = raw, limit, too_big, 0

    def read(self, size=-1):
        try:
            data = self.raw.read(CHUNK if size is None or size < 0 else min(size, CHUNK))
        except (OSError, EOFError, zlib.error) as error:
            raise ArchiveRefused(f"The gzip stream is damaged ({error}).") from None
        self.delivered += len(data)
        if self.delivered > self.limit:
            raise ArchiveRefused(self.too_big)
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers big enough to exhaust memory."""

    def _proc_member(self, tarfile_):
        if (
            self.type
            in (
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE,
            )
            and self.size > MAX_TAR_HEADER
        ):
            raise ArchiveRefused("The archive has an oversized extended header.")
        return super()._proc_member(tarfile_)


def _tar_entries(handle, caps: Caps) -> Iterator[Entry]:
    too_big = f"The archive unpacks to more than {caps.max_bytes // MB} MB."
    # Headers and padding come on top of the content: allow for them, not for more.
    stream = LimitedReader(
        gzip.GzipFile(fileobj=handle, mode="rb"), caps.max_bytes + caps.max_entries * 1536, too_big
    )
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
            for member in archive:
                path = safe_path(member.name)
                if member.isdir():
                    kind = "dir"
                elif member.issym():
                    kind = "symlink"
                elif member.islnk():
                    kind = "hardlink"
                elif member.isreg() and not member.issparse():
                    kind = "file"
                elif member.issparse():
                    raise ArchiveRefused(f"The entry {member.name!r} is a sparse file.")
                else:
                    what = {
                        tarfile.CHRTYPE: "a character device",
                        tarfile.BLKTYPE: "a block device",
                        tarfile.FIFOTYPE: "a fifo",
                    }.get(member.type, "of an unsupported type")
                    raise ArchiveRefused(f"The entry {member.name!r} is {what}.")
                if path is None:
                    if kind == "dir":
                        continue
                    raise ArchiveRefused(f"The entry {member.name!r} has no name.")
                yield Entry(
                    kind,
                    path,
                    executable=bool(member.mode & 0o111),
                    link=member.linkname,
                    open=(lambda m=member: archive.extractfile(m)) if kind == "file" else None,
                )
    except tarfile.TarError as error:
        raise ArchiveRefused(f"The tar stream is damaged ({error}).") from None


def _zip_entries(handle, caps: Caps) -> Iterator[Entry]:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveRefused(f"The zip file is damaged ({error}).") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > caps.max_entries:
            raise ArchiveRefused(
                f"The archive has {len(infos)} entries; at most {caps.max_entries} are allowed."
            )
        _refuse_overlapping(infos)
        if sum(info.file_size for info in infos) > caps.max_bytes:
            raise ArchiveRefused(f"The archive unpacks to more than {caps.max_bytes // MB} MB.")
        for info in infos:
            if info.flag_bits & 0x1:
                raise ArchiveRefused(f"The entry {info.filename!r} is encrypted.")
            path = safe_path(info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            file_type = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                with archive.open(info) as link:
                    target = link.read(MAX_PATH + 1)
                if len(target) > MAX_PATH:
                    raise ArchiveRefused(f"The link {info.filename!r} has a target too long.")
                kind, link_target = "symlink", target.decode("utf-8", "replace")
            elif file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveRefused(f"The entry {info.filename!r} is a device, fifo or socket.")
            elif info.is_dir():
                kind, link_target = "dir", ""
            else:
                kind, link_target = "file", ""
            if path is None:
                if kind == "dir":
                    continue
                raise ArchiveRefused(f"The entry {info.filename!r} has no name.")
            yield Entry(
                kind,
                path,
                executable=bool(mode & 0o111),
                link=link_target,
                open=(lambda i=info: archive.open(i)) if kind == "file" else None,
            )


def _refuse_overlapping(infos: list[zipfile.ZipInfo]) -> None:
    """Entries sharing compressed bytes are how the smallest zip bombs multiply their size."""
    spans = sorted(
        (info.header_offset, info.header_offset + 30 + len(info.orig_filename) + info.compress_size)
        for info in infos
    )
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        if next_start < end:
            raise ArchiveRefused("The archive's entries overlap (a zip bomb).")


def entries(handle, fmt: str, caps: Caps) -> Iterator[Entry]:
    return _tar_entries(handle, caps) if fmt == TAR_GZ else _zip_entries(handle, caps)


# --- the walk ----------------------------------------------------------------------------
def unpack(handle, fmt: str, dest: Path | None, caps: Caps | None = None, tick=None) -> dict:
    """Check every entry of the archive, extracting into ``dest`` unless it is None.

    Returns ``{"files", "bytes"}``. Raises ArchiveRefused at the first unsafe entry; what
    was extracted into ``dest`` by then is removed.
    """
    caps = caps or Caps.from_settings()
    try:
        return _unpack(handle, fmt, dest, caps, tick)
    except BaseException:
        if dest is not None:
            for child in dest.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _unpack(handle, fmt, dest, caps, tick) -> dict:
    too_big = f"The archive unpacks to more than {caps.max_bytes // MB} MB."
    total = count = 0
    seen: dict[str, str] = {}  # path -> kind
    sizes: dict[str, int] = {}  # file path -> bytes, for hard links to count again
    parents: set[str] = set()
    links: dict[str, str] = {}
    root = dest.resolve() if dest is not None else None

    def claim(path: PurePosixPath, kind: str) -> None:
        key = str(path)
        if key in seen and not (kind == "dir" == seen[key]):
            raise ArchiveRefused(f"The entry {key!r} appears twice.")
        if kind != "dir" and key in parents:
            raise ArchiveRefused(f"The entry {key!r} replaces a directory.")
        for parent in path.parents:
            if str(parent) == ".":
                continue
            if str(parent) in links or seen.get(str(parent)) in ("file", "hardlink"):
                raise ArchiveRefused(f"The entry {key!r} lies under a link or a file.")
            parents.add(str(parent))
        seen[key] = kind

    def copy(source, path: PurePosixPath, executable: bool) -> None:
        nonlocal total
        start, target = total, None
        if root is not None:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            target = os.fdopen(os.open(root / path, flags, 0o755 if executable else 0o644), "wb")
        try:
            while chunk := source.read(CHUNK):
                total += len(chunk)
                if total > caps.max_bytes:
                    raise ArchiveRefused(too_big)
                if target is not None:
                    target.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ArchiveRefused(f"The entry {str(path)!r} is damaged ({error}).") from None
        finally:
            if target is not None:
                target.close()
        sizes[str(path)] = total - start

    for entry in entries(handle, fmt, caps):
        count += 1
        if count > caps.max_entries:
            raise ArchiveRefused(f"The archive has more than {caps.max_entries} entries.")
        if tick is not None and count % 200 == 0:
            tick()
        claim(entry.path, entry.kind)
        if entry.kind == "dir":
            if root is not None:
                (root / entry.path).mkdir(parents=True, exist_ok=True)
        elif entry.kind == "file":
            with entry.open() as source:
                copy(source, entry.path, entry.executable)
        elif entry.kind == "symlink":
            target = entry.link.replace("\\", "/")
            if not target or target.startswith("/") or "\x00" in target:
                raise ArchiveRefused(
                    f"The link {str(entry.path)!r} has an empty or absolute target."
                )
            if str(entry.path) in parents:
                raise ArchiveRefused(f"The link {str(entry.path)!r} replaces a directory.")
            links[str(entry.path)] = target
            resolve_inside(entry.path, links)  # early, for a clear message; again at the end
        else:  # a tar hard link names an earlier member of the archive
            named = safe_path(entry.link)
            if named is None:
                raise ArchiveRefused(f"The hard link {str(entry.path)!r} names nothing.")
            original = resolve_inside(named, links)
            if original == entry.path or str(original) not in sizes:
                raise ArchiveRefused(
                    f"The hard link {str(entry.path)!r} names {entry.link!r}, "
                    "which is not a file earlier in the archive."
                )
            if root is None:  # a copy of the original: its bytes count again
                total += sizes[str(original)]
                sizes[str(entry.path)] = sizes[str(original)]
                if total > caps.max_bytes:
                    raise ArchiveRefused(too_big)
                continue
            with open(root / original, "rb") as source:
                copy(source, entry.path, os.access(root / original, os.X_OK))
    for path in links:
        resolve_inside(PurePosixPath(path), links)
    if root is not None:
        for path, target in sorted(links.items()):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, root / path)
        for path in links:
            real = Path(os.path.realpath(root / path))
            if real != root and root not in real.parents:
                raise ArchiveRefused(f"The link {path!r} points outside the archive.")
    return {"files": count, "bytes": total}


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
    digest = hashlib.sha256()
    for chunk in uploaded_file.chunks(CHUNK):
        digest.update(chunk)
    uploaded_file.seek(0)
    try:
        fmt = detect_format(uploaded_file.read(4))
        uploaded_file.seek(0)
        summary = unpack(uploaded_file, fmt, None)
    except ArchiveRefused as refusal:
        raise ServiceError(
            str(refusal), code="invalid_archive", fields={"file": str(refusal)}
        ) from None
    if summary["files"] == 0:
        raise ServiceError(
            "The archive is empty.", code="invalid_archive", fields={"file": "empty"}
        )
    upload_id = uuid.uuid4()
    uploaded_file.seek(0)
    key = storages["private"].save(
        f"sources/{account.slug}/{app.slug}/{upload_id}.{fmt}", uploaded_file
    )
    return SourceUpload.objects.create(
        id=upload_id,
        account=account,
        app=app,
        storage_key=key,
        filename=(uploaded_file.name or "")[:255],
        size=uploaded_file.size,
        sha256=digest.hexdigest(),
        expires_at=timezone.now() + dt.timedelta(days=settings.SOURCE_TTL_DAYS),
    )


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
    if upload.expires_at <= timezone.now():
        raise JobFailed(
            f"source upload {upload_id} expired on {upload.expires_at:%Y-%m-%d}; upload it again"
        )
    fmt = upload_format(upload)
    archive = context.workspace / f"source-archive.{fmt}"
    digest = hashlib.sha256()
    with storages["private"].open(upload.storage_key, "rb") as stored, open(archive, "wb") as out:
        while chunk := stored.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != upload.sha256:
        raise JobFailed(f"source upload {upload_id} in storage does not match its sha256")
    context.log(f"source: upload {upload_id} ({upload.size} bytes, {fmt}, {upload.sha256[:12]})")
    try:
        with open(archive, "rb") as handle:
            summary = unpack(handle, fmt, dest, tick=context.check)
    except ArchiveRefused as refusal:
        raise JobFailed(f"source archive refused: {refusal}") from None
    finally:
        archive.unlink(missing_ok=True)
    context.log(f"source: {summary['files']} entries, {summary['bytes']} bytes unpacked")
    return _single_root(dest)


def _single_root(dest: Path) -> Path:
    """An archive of one folder (``myapp/...``, as GitHub makes them) builds from that folder."""
    children = list(dest.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return dest
