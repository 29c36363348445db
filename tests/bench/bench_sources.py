"""Source intake: how fast an upload is checked and extracted, and how fast a bomb is refused.

A synthetic app source (JavaScript-like text files in nested folders, as a React Native app
without node_modules looks) as .tar.gz and .zip: the upload-time check (stream every entry,
write nothing) and the extraction into a workspace, in MB of unpacked content per second.
Then a 1 GB zip bomb against the default caps: the time until it is refused.
"""

import io
import random
import shutil
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from tests.bench.helpers import row

MB = 1024 * 1024


def synthetic_source(files: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    words = [f"identifier{n}" for n in range(500)] + ["const", "return", "import", "=>", "{", "}"]
    members = []
    for number in range(files):
        folder = f"app/src/feature{number % 40}/part{number % 7}"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(200, 2500)))
        members.append((f"{folder}/module{number}.js", text.encode()))
    return members


class Zeros:
    """A file of ``size`` zero bytes that is never held in memory."""

    def __init__(self, size: int):
        self.left = size

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def best_rate(action, unpacked_bytes: int, repeats: int) -> float:
    """Best of ``repeats`` runs, in MB of unpacked content per second; ``action`` may return
    the seconds that count (else the whole call counts)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        counted = action()
        best = min(best, counted if counted is not None else time.perf_counter() - start)
    return unpacked_bytes / MB / best


def run(ctx) -> list[dict]:
    from builds.engine.workspaces import workspace_root
    from publishing.sources import ArchiveRefused, Caps, unpack
    from tests.publishing.archives import tar_gz, zip_bytes

    files = 400 if ctx.quick else 2000
    repeats = 2 if ctx.quick else 3
    members = synthetic_source(files)
    unpacked = sum(len(data) for _, data in members)
    archives = {
        "tar.gz": tar_gz([(name, "file", data) for name, data in members]),
        "zip": zip_bytes(members),
    }
    caps = Caps.from_settings()
    ctx.log(f"source: {files} files, {unpacked / MB:.1f} MB unpacked")
    rows = []
    for fmt, data in archives.items():

        def check(d=data, f=fmt):
            unpack(io.BytesIO(d), f, None, caps)

        def extract(d=data, f=fmt):
            root = workspace_root()  # where jobs extract
            root.mkdir(parents=True, exist_ok=True)
            workspace = Path(tempfile.mkdtemp(dir=root))
            try:
                start = time.perf_counter()
                unpack(io.BytesIO(d), f, workspace, caps)
                return time.perf_counter() - start
            finally:
                shutil.rmtree(workspace)

        for what, action in (("check", check), ("extraction", extract)):
            rate = best_rate(action, unpacked, repeats)
            rows.append(row(f"source {what} ({fmt}, {files} files)", rate, "MB/s"))

    bomb_caps = Caps(max_bytes=256 * MB, max_entries=caps.max_entries)
    tar_bomb = io.BytesIO()
    with tarfile.open(fileobj=tar_bomb, mode="w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo("zeros")
        info.size = 512 * MB
        archive.addfile(info, Zeros(info.size))
    zip_bomb = io.BytesIO()
    with (
        zipfile.ZipFile(zip_bomb, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros", "w", force_zip64=True) as entry,
    ):
        for _ in range(512):
            entry.write(bytes(MB))
    for fmt, data in (("tar.gz", tar_bomb.getvalue()), ("zip", zip_bomb.getvalue())):
        start = time.perf_counter()
        try:
            unpack(io.BytesIO(data), fmt, None, bomb_caps)
            refused = False
        except ArchiveRefused:
            refused = True
        seconds = time.perf_counter() - start
        ctx.log(f"512 MB {fmt} bomb: {len(data) / 1024:.0f} KB, refused={refused} (cap 256 MB)")
        rows.append(row(f"512 MB {fmt} bomb refused in", seconds * 1000, "ms", "refused", refused))
    return rows
