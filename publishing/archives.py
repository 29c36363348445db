"""Archives made safe to build: the walk over a .tar.gz or .zip that checks every entry.

An archive is read as a stream of entries and every entry is checked before anything is
written: no absolute paths, no ``..``, no devices or fifos, links only to places inside the
tree, and the bytes actually decompressed (not the sizes the headers claim) count against
the caps (``SOURCE_MAX_UNPACKED_MB``, ``SOURCE_MAX_FILES``). The same walk validates an upload
(writing nothing) and extracts it into a job's workspace. Symbolic links are created last,
after every file, so no write can pass through one; a final check resolves each of them
inside the tree.

Standard library only: a worker runs this file with ``python -I`` inside the build sandbox
(no network, only the job's workspace writable) to extract a customer's archive, so that a
flaw in a decompressor or in the walk reaches nothing of the service::

    python -I archives.py FORMAT MAX_BYTES MAX_ENTRIES ARCHIVE DEST

It prints ``ARCHIVE_OK {"files": N, "bytes": N}`` (exit 0) or ``ARCHIVE_REFUSED reason``
(exit 2).
"""

import gzip
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MB = 1024 * 1024
CHUNK = 1024 * 1024

TAR_GZ, ZIP = "tar.gz", "zip"
MAX_PATH = 1024
MAX_NAME = 255
MAX_LINK_HOPS = 40
MAX_TAR_HEADER = 1024 * 1024  # pax/GNU long-name headers are read into memory whole


class ArchiveRefused(Exception):
    """The archive is unsafe or malformed; the message says why, for the customer."""


@dataclass(frozen=True)
class Caps:
    max_bytes: int
    max_entries: int

    @classmethod
    def from_settings(cls) -> "Caps":
        from django.conf import settings  # in the worker and web only; never in the sandbox

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
        # A private hook of TarInfo (CPython 3.11 to 3.14) that typeshed does not declare.
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _tar_entries(handle, caps: Caps) -> Iterator[Entry]:
    too_big = f"The archive unpacks to more than {caps.max_bytes // MB} MB."
    # Headers and padding come on top of the content: allow for them, not for more.
    stream = LimitedReader(
        gzip.GzipFile(fileobj=handle, mode="rb"), caps.max_bytes + caps.max_entries * 1536, too_big
    )
    try:
        # Stream mode ("r|") only reads; typeshed asks every fileobj to seek and write too.
        with tarfile.open(
            fileobj=stream,  # type: ignore[call-overload]
            mode="r|",
            tarinfo=_BoundedTarInfo,
        ) as archive:
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
            assert entry.open is not None  # every file entry has one
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


def main(argv: list[str]) -> int:
    fmt, max_bytes, max_entries, archive, dest = argv
    caps = Caps(int(max_bytes), int(max_entries))
    try:
        with open(archive, "rb") as handle:
            summary = unpack(handle, fmt, Path(dest), caps)
    except ArchiveRefused as refusal:
        print(f"ARCHIVE_REFUSED {refusal}", flush=True)
        return 2
    print(f"ARCHIVE_OK {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
