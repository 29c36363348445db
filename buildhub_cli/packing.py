"""A source directory packed as BuildHub accepts it: .gitignore honoured, refusals made here.

The server checks every entry of an upload (publishing/archives.py) and refuses the whole
archive for one bad entry; packing refuses the same things before anything is uploaded, with
the path that is wrong: links whose target is absolute or leaves the tree, fifos, sockets
and devices, over-long names, too many entries or bytes.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MB = 1024 * 1024
# The server's defaults (SOURCE_MAX_FILES, SOURCE_MAX_UNPACKED_MB); it checks again.
MAX_FILES = 50_000
MAX_UNPACKED_BYTES = 1024 * MB
MAX_PATH = 1024
MAX_NAME = 255
ALWAYS_SKIPPED = {".git"}


class PackingRefused(Exception):
    """The source cannot be uploaded as it is; the message names the path and the reason."""


# --- .gitignore --------------------------------------------------------------------------
def _glob_to_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = glob.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
                i += 1
                continue
            body = glob[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        elif char == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Rule:
    base: str  # the directory of the .gitignore, relative to the root ("" for the root)
    regex: re.Pattern
    negated: bool
    directories_only: bool

    @classmethod
    def parse(cls, line: str, base: str) -> Rule | None:
        line = line.rstrip("\n").rstrip("\r")
        stripped = re.sub(r"(?<!\\) +$", "", line)
        if not stripped or stripped.startswith("#"):
            return None
        negated = stripped.startswith("!")
        if negated or stripped.startswith("\\!") or stripped.startswith("\\#"):
            stripped = stripped[1:]
        directories_only = stripped.endswith("/")
        stripped = stripped.rstrip("/")
        if not stripped:
            return None
        anchored = "/" in stripped
        stripped = stripped.lstrip("/")
        prefix = "" if anchored else "(?:.*/)?"
        return cls(
            base, re.compile(f"^{prefix}{_glob_to_regex(stripped)}$"), negated, directories_only
        )

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.directories_only and not is_dir:
            return False
        if self.base:
            if not path.startswith(self.base + "/"):
                return False
            path = path[len(self.base) + 1 :]
        return bool(self.regex.match(path))


@dataclass
class IgnoreRules:
    """The .gitignore files met so far, root first: the last rule that matches decides."""

    rules: list[Rule] = field(default_factory=list)

    def add_file(self, path: Path, base: str) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.rules.extend(rule for line in text.splitlines() if (rule := Rule.parse(line, base)))

    def ignored(self, path: str, is_dir: bool) -> bool:
        decision = False
        for rule in self.rules:
            if rule.matches(path, is_dir):
                decision = not rule.negated
        return decision


# --- the walk ----------------------------------------------------------------------------
@dataclass
class Packed:
    files: list[str]  # paths relative to the root, in archive order
    unpacked_bytes: int


def _check_name(relative: str) -> None:
    if len(relative) > MAX_PATH or any(len(part) > MAX_NAME for part in relative.split("/")):
        raise PackingRefused(f"{relative[:80]}...: the name is too long for BuildHub.")


def _check_link(root: Path, relative: str, target: str) -> None:
    if target.startswith("/"):
        raise PackingRefused(
            f"{relative}: a symbolic link to an absolute path ({target}); BuildHub refuses "
            "links that leave the source tree."
        )
    resolved = os.path.realpath(root / relative)
    if resolved != str(root) and not resolved.startswith(str(root) + os.sep):
        raise PackingRefused(
            f"{relative}: a symbolic link to {target}, outside the source tree; BuildHub "
            "refuses links that leave it."
        )


def select_files(root: Path, max_files=MAX_FILES, max_bytes=MAX_UNPACKED_BYTES) -> Packed:
    """What of ``root`` goes into the upload: everything git would not ignore (.gitignore in
    every directory, .git/info/exclude), never ``.git`` itself."""
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        raise PackingRefused(f"{root}: not a directory.")
    rules = IgnoreRules()
    rules.add_file(root / ".git" / "info" / "exclude", "")
    files: list[str] = []
    total = 0

    def walk(directory: Path, relative_dir: str) -> None:
        nonlocal total
        if (directory / ".gitignore").is_file():
            rules.add_file(directory / ".gitignore", relative_dir)
        with os.scandir(directory) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        for entry in ordered:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            is_dir = stat.S_ISDIR(mode)
            if entry.name in ALWAYS_SKIPPED or rules.ignored(relative, is_dir):
                continue
            _check_name(relative)
            if stat.S_ISLNK(mode):
                _check_link(root, relative, os.readlink(entry.path))
            elif is_dir:
                walk(Path(entry.path), relative)
                continue
            elif not stat.S_ISREG(mode):
                kind = (
                    "a fifo"
                    if stat.S_ISFIFO(mode)
                    else "a socket"
                    if stat.S_ISSOCK(mode)
                    else "a device"
                )
                raise PackingRefused(
                    f"{relative}: {kind}; BuildHub accepts only files, directories and links "
                    "inside the tree (add it to .gitignore)."
                )
            else:
                total += entry.stat(follow_symlinks=False).st_size
                if total > max_bytes:
                    raise PackingRefused(
                        f"The source is more than {max_bytes // MB} MB unpacked, BuildHub's "
                        "limit; add what the build does not need to .gitignore."
                    )
            files.append(relative)
            if len(files) > max_files:
                raise PackingRefused(
                    f"The source has more than {max_files} files, BuildHub's limit; add what "
                    "the build does not need (node_modules, build outputs) to .gitignore."
                )

    walk(root, "")
    if not files:
        raise PackingRefused(f"{root}: nothing to upload (empty, or everything is ignored).")
    return Packed(files, total)


def pack_directory(root: Path, out, **caps) -> Packed:
    """Write ``root`` as a .tar.gz into the binary file ``out``; links stay links, modes are
    reduced to 644/755, owners and times are left out (the same source packs the same)."""
    root = Path(os.path.realpath(root))
    packed = select_files(root, **caps)
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for relative in packed.files:
            path = root / relative
            info = archive.gettarinfo(str(path), arcname=str(PurePosixPath(relative)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isreg():
                info.mode = 0o755 if info.mode & 0o111 else 0o644
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                info.mode = 0o755 if info.isdir() else 0o777
                archive.addfile(info)
    return packed


def pack_to_bytes(root: Path, **caps) -> bytes:
    buffer = io.BytesIO()
    pack_directory(root, buffer, **caps)
    return buffer.getvalue()
