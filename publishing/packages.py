"""Update packages made from a version's bundles when it is published.

A CodePush client installs a zip (publishing/codepush_package.py makes it). The zip is made
once per version and platform, inside the build sandbox (no network, only the publish
job's workspace writable), kept as an asset of the version (so it is kept as long as the
version's bundles are) and reused by every later publish of the version.
"""

import hashlib
import json
from pathlib import Path

from builds.engine import sandbox
from builds.engine.exceptions import JobFailed
from publishing import artifacts, codepush_package
from publishing.choices import ArtifactKind, Platform, Visibility
from publishing.models import Artifact, Version

BUNDLE_NAMES: dict[str, str] = {
    Platform.ANDROID: "index.android.bundle",
    Platform.IOS: "main.jsbundle",
}


def package_hash(bundle_sha256: str, platform: str) -> str:
    """The CodePush package hash of the zip holding a bundle with this sha256."""
    entry = f"{codepush_package.FOLDER}/{BUNDLE_NAMES[platform]}:{bundle_sha256}"
    return hashlib.sha256(json.dumps([entry], separators=(",", ":")).encode()).hexdigest()


def ensure_packages(context, version: Version, assets: list[Artifact]) -> dict[str, dict]:
    """``{platform: {artifact, sha256, size, package_hash}}`` of the version's CodePush zips."""
    made = {}
    existing = {a.platform: a for a in assets if a.kind == ArtifactKind.CODEPUSH_PACKAGE}
    for bundle in (a for a in assets if a.kind == ArtifactKind.OTA_BUNDLE):
        expected = package_hash(bundle.sha256, bundle.platform)
        package = existing.get(bundle.platform) or _pack(context, version, bundle, expected)
        made[bundle.platform] = {
            "artifact": str(package.pk),
            "sha256": package.sha256,
            "size": package.size,
            "package_hash": expected,
        }
    return made


def _pack(context, version: Version, bundle: Artifact, expected: str) -> Artifact:
    work = context.workspace / f"codepush-{bundle.platform}"
    work.mkdir(exist_ok=True)
    source, zipped = work / BUNDLE_NAMES[bundle.platform], work / "package.zip"
    with artifacts.open_artifact(bundle) as stored, open(source, "wb") as out:
        while chunk := stored.read(artifacts.CHUNK):
            out.write(chunk)
    reported = {}

    def read(line: str) -> None:
        if line.startswith("CODEPUSH_PACKAGE "):
            reported.update(json.loads(line.split(" ", 1)[1]))

    command, readable = sandbox.python_script(
        Path(codepush_package.__file__), source, zipped, BUNDLE_NAMES[bundle.platform]
    )
    context.run(command, on_line=read, readable=readable)
    if reported.get("package_hash") != expected:
        raise JobFailed(f"the CodePush package of {bundle.platform} does not hold its bundle")
    app = version.app
    package = artifacts.store_file(
        zipped,
        account=app.account,
        kind=ArtifactKind.CODEPUSH_PACKAGE,
        key=f"codepush/{app.account.slug}/{app.slug}/v{version.number}/{bundle.platform}.zip",
        job=context.job,
        app=app,
        platform=bundle.platform,
        visibility=Visibility.PUBLIC,
        content_type="application/zip",
    )
    version.assets.add(package)
    context.log(f"CodePush package {bundle.platform}: {package.size} bytes, hash {expected[:12]}")
    return package
