"""Source archives in tests: good and hostile ones, the caps they are checked against,
and their upload through the API."""

import io
import stat
import tarfile

from django.core.files.uploadedfile import SimpleUploadedFile

from publishing.sources import Caps
from tests.publishing.archives import (
    encrypted_flag_zip,
    tar_gz,
    zip_bytes,
    zip_with_lying_size,
    zip_with_overlapping_entries,
)

SMALL = Caps(max_bytes=1024 * 1024, max_entries=50)
GOOD_TAR = [
    ("myapp", "dir", None),
    ("myapp/package.json", "file", b'{"name": "myapp"}'),
    ("myapp/bin", "dir", None),
    ("myapp/bin/run.sh", "file", b"#!/bin/sh\necho hi\n", 0o4755),
    ("myapp/src", "dir", None),
    ("myapp/src/App.js", "file", b"export default 1;\n"),
    ("myapp/src/index.js", "symlink", "App.js"),
    ("myapp/README", "hardlink", "myapp/package.json"),
]


FIVE_MB = b"\0" * (5 * 1024 * 1024)
HOSTILE = {
    "tar traversal": (tar_gz([("../evil.txt", "file", b"x")]), "tar.gz", "outside the archive"),
    "tar nested traversal": (
        tar_gz([("a/../../evil.txt", "file", b"x")]),
        "tar.gz",
        "outside the archive",
    ),
    "tar absolute path": (tar_gz([("/tmp/evil.txt", "file", b"x")]), "tar.gz", "absolute path"),
    "tar absolute symlink": (
        tar_gz([("passwd", "symlink", "/etc/passwd")]),
        "tar.gz",
        "absolute target",
    ),
    "tar symlink escaping": (
        tar_gz([("up", "symlink", "../../etc")]),
        "tar.gz",
        "outside the archive",
    ),
    "tar symlink escaping through a later link": (
        tar_gz([("esc", "symlink", "p/q/../.."), ("p", "symlink", "."), ("q", "dir", None)]),
        "tar.gz",
        "outside the archive",
    ),
    "tar file written through a symlinked dir": (
        tar_gz([("d", "symlink", "sub"), ("sub", "dir", None), ("d/x.txt", "file", b"x")]),
        "tar.gz",
        "under a link",
    ),
    "tar symlink replacing a dir": (
        tar_gz([("d/x.txt", "file", b"x"), ("d", "symlink", "elsewhere")]),
        "tar.gz",
        "replaces a directory",
    ),
    "tar hard link to an absolute path": (
        tar_gz([("passwd", "hardlink", "/etc/passwd")]),
        "tar.gz",
        "absolute path",
    ),
    "tar hard link upwards": (
        tar_gz([("passwd", "hardlink", "../../etc/passwd")]),
        "tar.gz",
        "outside the archive",
    ),
    "tar hard link to nothing earlier": (
        tar_gz([("copy", "hardlink", "later.txt"), ("later.txt", "file", b"x")]),
        "tar.gz",
        "not a file earlier",
    ),
    "tar hard links multiplying a file": (
        tar_gz(
            [("big", "file", b"\1" * 400_000)] + [(f"copy{i}", "hardlink", "big") for i in range(5)]
        ),
        "tar.gz",
        "more than 1 MB",
    ),
    "tar character device": (tar_gz([("tty", "chr", None)]), "tar.gz", "character device"),
    "tar block device": (tar_gz([("sda", "blk", None)]), "tar.gz", "block device"),
    "tar fifo": (tar_gz([("pipe", "fifo", None)]), "tar.gz", "fifo"),
    "tar duplicate entry": (
        tar_gz([("a.txt", "file", b"1"), ("a.txt", "file", b"2")]),
        "tar.gz",
        "appears twice",
    ),
    "tar too many files": (
        tar_gz([(f"f{i}", "file", b"") for i in range(51)]),
        "tar.gz",
        "more than 50 entries",
    ),
    "tar.gz bomb": (tar_gz([("zeros", "file", FIVE_MB)]), "tar.gz", "more than 1 MB"),
    "tar oversized pax header": (
        tar_gz(
            [("a.txt", "file", b"x")],
            format=tarfile.PAX_FORMAT,
            pax_headers={"comment": "x" * (2 * 1024 * 1024)},
        ),
        "tar.gz",
        "oversized extended header",
    ),
    "truncated gzip": (tar_gz(GOOD_TAR)[:60], "tar.gz", "damaged"),
    "zip traversal": (zip_bytes([("../evil.txt", b"x")]), "zip", "outside the archive"),
    "zip windows traversal": (zip_bytes([("..\\evil.txt", b"x")]), "zip", "outside the archive"),
    "zip drive path": (zip_bytes([("C:\\evil.txt", b"x")]), "zip", "absolute path"),
    "zip absolute path": (zip_bytes([("/tmp/evil.txt", b"x")]), "zip", "absolute path"),
    "zip absolute symlink": (
        zip_bytes([("passwd", b"/etc/passwd", stat.S_IFLNK | 0o777)]),
        "zip",
        "absolute target",
    ),
    "zip symlink escaping": (
        zip_bytes([("up", b"../..", stat.S_IFLNK | 0o777)]),
        "zip",
        "outside the archive",
    ),
    "zip device": (zip_bytes([("tty", b"", stat.S_IFCHR | 0o666)]), "zip", "device"),
    "zip fifo": (zip_bytes([("pipe", b"", stat.S_IFIFO | 0o666)]), "zip", "fifo"),
    "zip bomb": (zip_bytes([("zeros", FIVE_MB)]), "zip", "more than 1 MB"),
    "zip too many files": (
        zip_bytes([(f"f{i}", b"") for i in range(51)]),
        "zip",
        "51 entries; at most 50",
    ),
    "zip headers understating the size": (
        zip_with_lying_size(FIVE_MB, 10),
        "zip",
        "damaged",
    ),
    "zip overlapping entries": (
        zip_with_overlapping_entries(b"\0" * 300_000, 9),
        "zip",
        "overlap",
    ),
    "zip encrypted entry": (encrypted_flag_zip(), "zip", "encrypted"),
    "zip damaged": (zip_bytes([("a.txt", b"x")])[:-30], "zip", "damaged"),
}


def upload(client, data: bytes, name="src.tar.gz", slug="shop"):
    return client.post(
        f"/api/v1/apps/{slug}/sources/",
        {"file": SimpleUploadedFile(name, data, content_type="application/octet-stream")},
        format="multipart",
    )


def source_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        content = b'{"name": "shop"}'
        entry = tarfile.TarInfo("shop/package.json")
        entry.size = len(content)
        archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()
