"""A CodePush update package: the release's bundle in the zip a CodePush client installs.

Standard library only: the publish job runs this file with ``python -I`` inside the build
sandbox (no network, only the job's workspace writable)::

    python -I codepush_package.py BUNDLE ZIP BUNDLE_NAME

The zip holds ``CodePush/<BUNDLE_NAME>`` (``index.android.bundle``, ``main.jsbundle``) with
fixed timestamps, so the same bundle always makes the same bytes. It prints
``CODEPUSH_PACKAGE {"package_hash": ..., "size": ...}``: the package hash as CodePush
computes it, the SHA-256 of the JSON list of ``path:sha256`` of every file, sorted.
"""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

FOLDER = "CodePush"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
IGNORED = (".codepushrelease", ".DS_Store", "__MACOSX")


def package_hash(files: dict[str, bytes]) -> str:
    """CodePush's package hash of ``{relative path: content}``."""
    entries = sorted(
        f"{path}:{hashlib.sha256(content).hexdigest()}"
        for path, content in files.items()
        if not any(part in IGNORED for part in path.split("/"))
    )
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def pack(bundle: Path, out: Path, bundle_name: str) -> dict:
    content = bundle.read_bytes()
    name = f"{FOLDER}/{bundle_name}"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo(name, date_time=FIXED_TIME)
        entry.compress_type = zipfile.ZIP_DEFLATED
        entry.external_attr = 0o644 << 16
        archive.writestr(entry, content)
    return {"package_hash": package_hash({name: content}), "size": out.stat().st_size}


def main(argv: list[str]) -> int:
    bundle, out, bundle_name = argv
    if "/" in bundle_name or bundle_name in ("", ".", ".."):
        print(f"CODEPUSH_REFUSED bad bundle name {bundle_name!r}", flush=True)
        return 2
    print(f"CODEPUSH_PACKAGE {json.dumps(pack(Path(bundle), Path(out), bundle_name))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
