"""The OTA bundle executor (job kind ``build.ota``): the app's source to a Hermes bundle.

Steps: fetch the source (publishing.sources) → ``npm ci --ignore-scripts`` from the app's
lock file (the account's npm cache, its registries checked first) → Metro bundle (dev off,
minified) with its sourcemap → the app's own ``hermesc`` to Hermes bytecode with its
sourcemap → compose the two maps → check the size against the account's bundle limit →
upload the bundle (public) and the composed map (private).

Metro and hermesc come from the app's dependencies, so the bytecode matches the Hermes
runtime of the installed app; the pinned tool chain in ``toolchain/`` serves apps without
them. Node-side steps run through ``toolchain/ota.js``. Every step runs in the job's
sandbox (builds.engine.sandbox): only npm has the network, and Metro's transform cache is
the account's own.
"""

import contextlib
import fcntl
import functools
import json
import re
import shutil
import sys
import time
from pathlib import Path

from django.conf import settings

from buildhub import metrics
from builds.choices import Tier
from builds.engine.exceptions import JobFailed, RetryableError
from builds.engine.workspaces import workspace_root
from builds.limits import effective_limits
from builds.tiers import MB
from publishing import artifacts, caches, registries, runtime, sources
from publishing.builds import BUILD_KINDS
from publishing.choices import ArtifactKind, Visibility
from publishing.models import App
from publishing.secrets import account_secrets

OTA_KIND = BUILD_KINDS["ota"]
# Where a step sees the account's caches (they live below var/, which it must not learn of).
NPM_CACHE_INSIDE, METRO_CACHE_INSIDE = "/cache/npm", "/cache/metro"
HBC_MAGIC = bytes.fromhex("c61fbc03c103191f")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
NPM_LOCK_FILES = ("package-lock.json", "npm-shrinkwrap.json")
OTHER_LOCK_FILES = ("yarn.lock", "pnpm-lock.yaml", "bun.lockb", "bun.lock")
NETWORK_ERRORS = re.compile(
    r"ECONNRESET|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED|ENOTFOUND|socket hang up|network", re.I
)
HERMESC_BIN = {"linux": "linux64-bin", "darwin": "osx-bin"}.get(sys.platform, "linux64-bin")
# Where a React Native app keeps its Hermes compiler: inside react-native up to 0.82, the
# separate hermes-compiler package from 0.83 on (hoisted, or nested under react-native).
HERMESC_PATHS = (
    f"node_modules/react-native/sdks/hermesc/{HERMESC_BIN}/hermesc",
    f"node_modules/hermes-compiler/hermesc/{HERMESC_BIN}/hermesc",
    f"node_modules/react-native/node_modules/hermes-compiler/hermesc/{HERMESC_BIN}/hermesc",
)


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# --- source --------------------------------------------------------------------------------
def app_root(source: Path) -> Path:
    """The folder with package.json: the source itself or its one top-level folder."""
    if (source / "package.json").is_file():
        return source
    children = [child for child in source.iterdir() if not child.name.startswith(".")]
    if len(children) == 1 and (children[0] / "package.json").is_file():
        return children[0]
    raise JobFailed("The source has no package.json at its root: is it a React Native app?")


def entry_file(app_dir: Path, platform: str) -> str:
    for name in (f"index.{platform}.js", "index.js"):
        if (app_dir / name).is_file():
            return name
    try:
        main = json.loads((app_dir / "package.json").read_text()).get("main")
    except (ValueError, OSError):
        raise JobFailed("The app's package.json is not valid JSON.") from None
    if (
        isinstance(main, str)
        and main
        and (app_dir / main).resolve().is_relative_to(app_dir.resolve())
        and (app_dir / main).is_file()
    ):
        return main
    raise JobFailed(f"No entry file: the app needs index.js, index.{platform}.js or a 'main'.")


@contextlib.contextmanager
def build_directory():
    """A free build directory, locked for this build and emptied before and after it.

    Builds reuse the same few paths so Metro's transform cache (whose keys include absolute
    paths of the transformer and its config) stays warm from one build to the next.
    """
    root = Path(settings.OTA_BUILD_ROOT) if settings.OTA_BUILD_ROOT else workspace_root() / "bh-ota"
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(settings.OTA_BUILD_SLOTS):
        lock = open(root / f"slot-{slot}.lock", "a")  # noqa: SIM115 - held until the end
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        path = root / f"slot-{slot}"
        try:
            shutil.rmtree(path, ignore_errors=True)  # left by a build that was killed
            path.mkdir()
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            lock.close()
        return
    raise RetryableError("Every OTA build directory on this worker is in use.")


# --- tool chain ----------------------------------------------------------------------------
def driver() -> Path:
    """The Node side of the build; Node and npm must be on this worker."""
    for tool in (settings.OTA_NODE, settings.OTA_NPM):
        if shutil.which(tool) is None:
            raise JobFailed(
                f"{tool} is not installed on this worker: OTA builds need Node.js 20+ and npm."
            )
    script = Path(settings.OTA_TOOLCHAIN_DIR) / "ota.js"
    if not script.is_file():
        raise JobFailed(f"The OTA tool chain is missing on this worker ({script}).")
    return script


def find_hermesc(app_dir: Path) -> tuple[Path, str]:
    """The app's own hermesc, else the pinned tool chain's (only for apps without React Native)."""
    for relative in HERMESC_PATHS:
        candidate = app_dir / relative
        if candidate.is_file():
            return candidate, "app"
    if (app_dir / "node_modules/react-native/package.json").is_file():
        raise JobFailed(
            "The app's react-native has no Hermes compiler (looked for "
            + ", ".join(HERMESC_PATHS)
            + "); bytecode from another compiler would not run on its Hermes."
        )
    toolchain = Path(settings.OTA_TOOLCHAIN_DIR)
    for relative in HERMESC_PATHS:
        candidate = toolchain / relative
        if candidate.is_file():
            return candidate, "toolchain"
    raise JobFailed(
        "No Hermes compiler: the app has neither react-native nor hermes-compiler, and the "
        "BuildHub tool chain is not installed on this worker (run `make toolchain`)."
    )


def bytecode_version(path: Path) -> int:
    """The Hermes bytecode version of ``path``; JobFailed if it is not Hermes bytecode."""
    with open(path, "rb") as handle:
        header = handle.read(12)
    if len(header) < 12 or header[:8] != HBC_MAGIC:
        raise JobFailed("hermesc wrote a file that is not Hermes bytecode.")
    return int.from_bytes(header[8:12], "little")


def bundle_size_error(size: int, limits) -> str | None:
    """The job's error when the bundle is over the account's limit, else None."""
    if size <= limits.max_bundle_bytes:
        return None
    return (
        f"bundle is {size / MB:.1f} MB; the {Tier(limits.tier).label} tier allows "
        f"{limits.max_bundle_mb} MB"
    )


class ToolOutput:
    """Collects a Node step's output: progress lines, the error report, the last lines."""

    def __init__(self, context, progress_from: int, progress_to: int):
        self.context = context
        self.span = (progress_from, progress_to)
        self.error: dict | None = None
        self.versions: dict[str, str] = {}
        self.tail: list[str] = []

    def __call__(self, line: str) -> None:
        line = strip_ansi(line).rstrip()
        if line.startswith("OTA_ERROR "):
            with contextlib.suppress(ValueError):
                self.error = json.loads(line[len("OTA_ERROR ") :])
        elif line.startswith("PROGRESS "):
            done, _, total = line.split()[1].partition("/")
            if done.isdigit() and total.isdigit() and int(total):
                low, high = self.span
                self.context.progress(low + (high - low) * int(done) // int(total))
        elif line.startswith("METRO_VERSION "):
            _, version, origin = line.split()
            self.versions = {"metro": version, "metro_from": origin}
        elif line:
            self.tail = [*self.tail[-19:], line]


def metro_error(report: dict | None, tail: list[str]) -> str:
    if not report:
        last = next((line for line in reversed(tail) if "rror" in line), tail[-1] if tail else "")
        return f"Metro failed: {last or 'no output'}"
    summary = report["message"].splitlines()[0] if report.get("message") else report["type"]
    summary = re.sub(r"^(?:Error|SyntaxError): ", "", summary)
    where = report.get("file") or ""
    if where and summary.startswith(f"{where}: "):
        summary = summary[len(where) + 2 :]
    if where and report.get("line"):
        where += f":{report['line']}" + (
            f":{report['column']}" if report.get("column") is not None else ""
        )
    return f"Metro could not bundle the app: {report['type']} in {where or '?'}: {summary}"


# --- the executor --------------------------------------------------------------------------
class StepClock:
    """Times the build's steps into buildhub_ota_step_duration_seconds: a step lasts until the
    next one begins; a step that fails is not timed (its job's outcome is counted)."""

    def __init__(self):
        self.step, self.began = None, 0.0

    def begin(self, step: str) -> None:
        self.end()
        self.step, self.began = step, time.monotonic()

    def end(self) -> None:
        if self.step is not None:
            metrics.OTA_STEP.labels(self.step).observe(time.monotonic() - self.began)
            self.step = None


def ota_executor(context) -> dict:
    params = context.params
    app = App.objects.select_related("account").get(pk=params["app_id"])
    platform = params["platform"]
    limits = effective_limits(app.account)
    secrets = account_secrets(app.account)
    for value in secrets.values():
        context.add_secret(value)
    script = driver()
    out = context.workspace / "out"
    out.mkdir()
    toolchain = Path(settings.OTA_TOOLCHAIN_DIR)

    context.progress(2, "Fetching the source")
    clock = StepClock()
    clock.begin("source")
    source = sources.materialize(context, params.get("source"))
    with (
        caches.account_caches(app.account) as (npm_cache, metro_cache),
        build_directory() as (build_dir),
    ):
        app_dir = build_dir / "app"
        shutil.move(str(app_root(source)), app_dir)
        entry = entry_file(app_dir, platform)
        context.log(f"source ready: entry {entry}, platform {platform}")
        runtime_version = runtime.from_app_json(app_dir, platform) or app.runtime_version
        context.log(
            f"runtime version {runtime_version}"
            if runtime_version
            else "no runtime version: "
            "set expo.runtimeVersion in app.json or the app's runtime_version to publish this"
        )

        context.progress(10, "Installing dependencies")
        clock.begin("install")
        install_dependencies(context, app_dir, secrets, npm_cache)

        context.progress(40, "Bundling with Metro")
        clock.begin("metro")
        metro_bundle = out / f"index.{platform}.bundle"
        metro_map = out / f"index.{platform}.bundle.map"
        metro = ToolOutput(context, 40, 65)
        code = context.run(
            [
                settings.OTA_NODE,
                script,
                "bundle",
                "--app",
                app_dir,
                "--entry",
                entry,
                "--platform",
                platform,
                "--bundle-out",
                metro_bundle,
                "--map-out",
                metro_map,
                "--cache",
                context.step_path(metro_cache, METRO_CACHE_INSIDE),
            ],
            cwd=app_dir,
            env=secrets,  # the app may read them while it is bundled (inlined env plugins)
            on_line=metro,
            check=False,
            writable=[build_dir, (metro_cache, METRO_CACHE_INSIDE)],
            readable=[toolchain],
        )
        if code != 0 or not metro_bundle.is_file():
            if metro.error and metro.error.get("type") == "MissingToolchain":
                raise JobFailed(metro.error["message"])
            raise JobFailed(metro_error(metro.error, metro.tail))
        context.log(f"Metro bundle: {metro_bundle.stat().st_size} bytes")

        context.progress(65, "Compiling to Hermes bytecode")
        clock.begin("hermes")
        hermesc, hermesc_from = find_hermesc(app_dir)
        context.log(f"hermesc from the {hermesc_from}: {hermesc}")
        bundle = out / f"index.{platform}.hbc"
        hermes_map = out / f"index.{platform}.hbc.map"
        hermes = ToolOutput(context, 65, 75)
        code = context.run(
            [hermesc, "-emit-binary", "-O", "-w", "-output-source-map", "-out", bundle]
            + [metro_bundle],
            cwd=out,
            on_line=hermes,
            check=False,
            readable=[build_dir, toolchain],
        )
        if code != 0 or not bundle.is_file():
            detail = next((line for line in hermes.tail if "error:" in line), "")
            raise JobFailed(f"hermesc failed (exit {code}): {detail or 'no output'}")
        version = bytecode_version(bundle)
        context.log(f"Hermes bytecode version {version}, {bundle.stat().st_size} bytes")

        context.progress(75, "Composing sourcemaps")
        clock.begin("sourcemaps")
        composed_map = out / f"index.{platform}.map"
        composer = ToolOutput(context, 75, 80)
        code = context.run(
            [
                settings.OTA_NODE,
                script,
                "compose",
                "--app",
                app_dir,
                "--metro-map",
                metro_map,
                "--hermes-map",
                hermes_map,
                "--out",
                composed_map,
            ],
            cwd=app_dir,
            on_line=composer,
            check=False,
            readable=[build_dir, toolchain],
        )
        if code != 0 or not composed_map.is_file():
            message = (composer.error or {}).get("message") or "no output"
            raise JobFailed(f"Composing the sourcemaps failed: {message}")

    context.progress(85, "Checking the bundle size")
    size = bundle.stat().st_size
    too_big = bundle_size_error(size, limits)
    if too_big:
        raise JobFailed(too_big)
    context.log(f"bundle size {size} bytes, within the {limits.max_bundle_mb} MB limit")

    context.progress(90, "Uploading the bundle and sourcemap")
    clock.begin("upload")
    key = f"ota/{app.account.slug}/{app.slug}/{context.job.pk}/index.{platform}"
    store = functools.partial(
        artifacts.store_file, account=app.account, job=context.job, app=app, platform=platform
    )
    stored_bundle = store(
        bundle,
        kind=ArtifactKind.OTA_BUNDLE,
        key=f"{key}.hbc",
        visibility=Visibility.PUBLIC,
        content_type="application/vnd.facebook.hermes-bytecode",
    )
    stored_map = store(
        composed_map,
        kind=ArtifactKind.SOURCEMAP,
        key=f"{key}.map",
        visibility=Visibility.PRIVATE,
        content_type="application/json",
    )
    context.log(f"uploaded bundle {stored_bundle.sha256} and private sourcemap {stored_map.pk}")
    clock.end()
    context.progress(100, "Bundle ready")
    return {
        "bundle_sha256": stored_bundle.sha256,
        "bundle_size": stored_bundle.size,
        "bytecode_version": version,
        "platform": platform,
        "entry": entry,
        "bundle_artifact": str(stored_bundle.pk),
        "sourcemap_artifact": str(stored_map.pk),
        "sourcemap_sha256": stored_map.sha256,
        "metro": metro.versions.get("metro", ""),
        "metro_from": metro.versions.get("metro_from", ""),
        "hermesc_from": hermesc_from,
        "runtime_version": runtime_version,
    }


def install_dependencies(context, app_dir: Path, secrets: dict, npm_cache: Path) -> None:
    """``npm ci`` from the app's lock file, scripts disabled, through the account's cache.

    The one step with the network: every registry and ``resolved`` URL is checked first
    (publishing.registries), and npm gets only the secrets its .npmrc names.
    """
    if not any((app_dir / name).is_file() for name in NPM_LOCK_FILES):
        others = [name for name in OTHER_LOCK_FILES if (app_dir / name).is_file()]
        raise JobFailed(
            "The app has no package-lock.json"
            + (f" (found {', '.join(others)}; only npm lock files are supported)" if others else "")
            + ": commit the lock file so the build installs exactly what you tested."
        )
    user_config = context.workspace / "npmrc"
    npm_secrets, ignored = registries.check_sources(app_dir, secrets, user_config)
    if ignored:
        context.log(
            f".npmrc: ignored {', '.join(sorted(set(ignored)))} "
            "(only registries and their credentials are used)"
        )
    context.log("npm ci --ignore-scripts from the app's lock file (the account's npm cache)")
    output = ToolOutput(context, 10, 40)
    code = context.run(
        [
            settings.OTA_NPM,
            "ci",
            "--ignore-scripts",
            "--include=dev",  # Metro and hermesc are dev dependencies of a React Native app
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=warn",
        ],
        cwd=app_dir,
        env={
            **npm_secrets,
            "npm_config_cache": context.step_path(npm_cache, NPM_CACHE_INSIDE),
            "npm_config_userconfig": user_config,
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        },
        on_line=output,
        check=False,
        network=True,
        writable=[app_dir, (npm_cache, NPM_CACHE_INSIDE)],
    )
    if code == 0:
        return
    errors = [line for line in output.tail if line.startswith("npm error")] or output.tail
    detail = " ".join(line.removeprefix("npm error").strip() for line in errors[:3])
    if NETWORK_ERRORS.search(" ".join(output.tail)):
        raise RetryableError(f"npm ci could not reach the registry: {detail}")
    raise JobFailed(f"npm ci failed (exit {code}): {detail or 'no output'}")
