"""Store builds: Expo EAS, Flutter (on a worker or in the customer's CI) and FlutterFlow.

The tools are the real ones (``eas``, ``flutter``) found on the worker's PATH. They run a
customer's project code, so they run in the job's sandbox (builds.engine.sandbox) with the
network (eas uploads the project, flutter fetches packages): a clean environment (the
sandbox's allow-list, the tool-chain locations, and only the account secrets the tool
needs, never the worker's own configuration), the tool-chain folders read-only, and package
caches inside the job's workspace. Every account secret is registered for redaction before
anything runs. A dry run (``"dry_run": true``) runs no tool and leaves an
artifact marked simulated; nothing else is ever simulated.
"""

import json
import os
import shutil
from pathlib import Path

from django.conf import settings

from builds.choices import LogLevel
from builds.engine.exceptions import JobFailed
from builds.engine.logs import redact
from publishing import artifacts
from publishing.choices import ArtifactKind, BuildStage, Platform, Provider, Visibility
from publishing.models import App
from publishing.secrets import account_secrets
from publishing.sources import materialize

EXPO_KIND, FLUTTER_KIND, FLUTTERFLOW_KIND = "build.expo", "build.flutter", "build.flutterflow"
EXPO_WEBSITE = "https://expo.dev"
# Where a worker's tool chains are installed: passed on, and shown read-only in the sandbox.
# Everything else of the worker's environment (database URLs, keys) stays out of the build.
TOOLCHAIN_DIRS = ("ANDROID_HOME", "ANDROID_SDK_ROOT", "JAVA_HOME", "FLUTTER_ROOT")
# Caches the tools write: the job's own, so no build reads what another account's wrote.
TOOL_CACHES = {"PUB_CACHE": "pub-cache", "GRADLE_USER_HOME": "gradle", "npm_config_cache": "npm"}
FLUTTER_OUTPUTS = {  # (platform, channel) -> flutter build subcommand, artifact kind, output
    (Platform.ANDROID, "preview"): ("apk", ArtifactKind.APK, "build/app/outputs/flutter-apk"),
    (Platform.ANDROID, "production"): (
        "appbundle",
        ArtifactKind.AAB,
        "build/app/outputs/bundle/release",
    ),
    (Platform.IOS, "preview"): ("ipa", ArtifactKind.IPA, "build/ios/ipa"),
    (Platform.IOS, "production"): ("ipa", ArtifactKind.IPA, "build/ios/ipa"),
}
EXTENSIONS = {ArtifactKind.APK: ".apk", ArtifactKind.AAB: ".aab", ArtifactKind.IPA: ".ipa"}


# --- shared steps --------------------------------------------------------------------------
def _app(context) -> App:
    app = App.objects.select_related("account").filter(pk=context.params.get("app_id")).first()
    if app is None or app.account_id != context.job.account_id:
        raise JobFailed("the app of this build no longer exists")
    return app


def find_tool(command: str, name: str, install: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise JobFailed(
            f"The {name} CLI ({command}) is not installed on this worker; {install}. "
            "Use dry_run for a simulated result without it."
        )
    return path


def register_secrets(context, account) -> dict[str, str]:
    """The account's secrets, each registered for redaction before any tool runs."""
    values = account_secrets(account)
    for value in values.values():
        context.add_secret(value)
    return values


def require_secret(values: dict[str, str], name: str) -> str:
    if not values.get(name):
        raise JobFailed(
            f"{name} is not set for this account: add it as an account secret "
            "(an access token from the provider) and submit the build again."
        )
    return values[name]


def tool_env(context, extra: dict[str, str]) -> dict[str, str]:
    """The tool-chain locations of the worker, the job's own caches, then ``extra``."""
    base = {name: os.environ[name] for name in TOOLCHAIN_DIRS if os.environ.get(name)}
    caches = {
        name: str(context.workspace / "cache" / folder) for name, folder in TOOL_CACHES.items()
    }
    return {**base, **caches, **extra}


def toolchain_dirs() -> list[Path]:
    return [Path(os.environ[name]) for name in TOOLCHAIN_DIRS if os.environ.get(name)]


def run_tool(context, args: list, *, env: dict, cwd: Path, json_output=False):
    """Run a store tool; a failure names the tool and its last output line (redacted).

    With ``json_output`` stdout goes to a file and is returned parsed (the CLIs print their
    JSON on stdout and their progress on stderr, which is logged).
    """
    last_lines: list[str] = []

    def remember(line: str) -> None:
        if line.strip():
            last_lines[:] = [*last_lines[-4:], line.strip()]

    command = list(args)
    out = context.workspace / "tool-output.json"
    if json_output:
        command = ["/bin/sh", "-c", 'exec "$@" > "$BUILDHUB_JSON_OUT"', "sh", *command]
        env = {**env, "BUILDHUB_JSON_OUT": str(out)}
    name = Path(str(args[0])).name
    returncode = context.run(
        command,
        env=env,
        cwd=cwd,
        on_line=remember,
        check=False,
        network=True,
        readable=[Path(str(args[0])).parent, *toolchain_dirs()],
    )
    if returncode != 0:
        detail = f": {last_lines[-1]}" if last_lines else ""
        raise JobFailed(redact(f"{name} exited with code {returncode}{detail}", context.secrets))
    if not json_output:
        return None
    text = out.read_text(errors="replace") if out.exists() else ""
    try:
        return json.loads(text)
    except ValueError:
        raise JobFailed(f"{name} printed no JSON result") from None


def simulated_result(context, app, kind: str, summary: dict) -> dict:
    """A dry run's artifact: a JSON file that says it is simulated and what would have run."""
    body = {
        "simulated": True,
        "note": "Dry run: no tool ran and nothing was built; this file only describes the build.",
        "job": str(context.job.pk),
        "app": app.slug,
        **summary,
    }
    path = context.workspace / f"simulated-{kind}.json"
    path.write_text(json.dumps(body, indent=2))
    artifact = store_output(context, app, path, kind, "application/json", simulated=True)
    context.log(
        f"SIMULATED (dry run): {kind} artifact {artifact.pk}; no tool ran", LogLevel.WARNING
    )
    context.progress(100, "Simulated (dry run)")
    return {"simulated": True, "artifact": str(artifact.pk)}


def store_output(context, app, path: Path, kind: str, content_type: str, simulated=False):
    """A build's output as a private artifact of the job, under the job's own key."""
    return artifacts.store_file(
        path,
        account=app.account,
        kind=kind,
        key=f"{app.account.slug}/{app.slug}/{context.job.pk}/{path.name}",
        job=context.job,
        app=app,
        platform=context.params.get("platform", ""),
        visibility=Visibility.PRIVATE,
        content_type=content_type,
        simulated=simulated,
    )


def _source_if_given(context):
    if context.params.get("source"):
        context.progress(10, "Fetching the source")
        return materialize(context, context.params["source"])
    return None


# --- Expo EAS ------------------------------------------------------------------------------
def eas_arguments(params: dict) -> list[str]:
    common = ["--platform", params["platform"], "--profile", params["channel"]]
    if params.get("stage") == BuildStage.SUBMIT:
        return ["submit", *common, "--latest", "--non-interactive", "--json", "--no-wait"]
    return ["build", *common, "--non-interactive", "--json", "--no-wait"]


def eas_build_url(build: dict) -> str:
    """The build's page on expo.dev, as eas-cli itself links it."""
    project = build.get("project") or {}
    owner = (project.get("ownerAccount") or {}).get("name")
    if owner and project.get("slug"):
        return f"{EXPO_WEBSITE}/accounts/{owner}/projects/{project['slug']}/builds/{build['id']}"
    return f"{EXPO_WEBSITE}/builds/{build['id']}"


def expo_executor(context):
    params = context.params
    app = _app(context)
    args = eas_arguments(params)
    context.progress(5, "Checking the eas CLI and EXPO_TOKEN")
    secrets = register_secrets(context, app.account)
    if params.get("dry_run"):
        source = _source_if_given(context)
        has_token = bool(secrets.get("EXPO_TOKEN"))
        context.log(
            f"SIMULATED (dry run): would run eas {' '.join(args)}; eas CLI "
            f"{'found' if shutil.which(settings.EAS_CLI) else 'missing'}, EXPO_TOKEN "
            f"{'set' if has_token else 'missing'}",
            LogLevel.WARNING,
        )
        return simulated_result(
            context,
            app,
            ArtifactKind.EAS_BUILD_URL,
            {"command": ["eas", *args], "source_checked": source is not None},
        )
    eas = find_tool(settings.EAS_CLI, "Expo EAS", "install it with `npm install -g eas-cli`")
    token = require_secret(secrets, "EXPO_TOKEN")
    context.progress(10, "Fetching the source")
    source = materialize(context, params.get("source"))
    context.progress(30, f"Running eas {args[0]}")
    env = tool_env(context, {"EXPO_TOKEN": token, "EAS_NO_VCS": "1"})
    output = run_tool(context, [eas, *args], env=env, cwd=source, json_output=True)
    entries = output if isinstance(output, list) else [output]
    if not entries or not all(isinstance(e, dict) and e.get("id") for e in entries):
        raise JobFailed(f"eas {args[0]} answered without a {args[0]} id")
    context.progress(90, "Recording the result")
    if params.get("stage") == BuildStage.SUBMIT:
        submissions = [
            {"id": e["id"], "status": e.get("status", ""), "platform": e.get("platform", "")}
            for e in entries
        ]
        for submission in submissions:
            context.log(f"EAS submission {submission['id']} is {submission['status']}")
        context.progress(100, "Submitted to EAS")
        return {"eas_submissions": submissions}
    builds = []
    for build in entries:
        url = eas_build_url(build)
        artifact = artifacts.record_url(
            account=app.account,
            kind=ArtifactKind.EAS_BUILD_URL,
            url=url,
            job=context.job,
            app=app,
            platform=params["platform"],
        )
        builds.append(
            {
                "id": build["id"],
                "status": build.get("status", ""),
                "url": url,
                "artifact": str(artifact.pk),
            }
        )
        context.log(f"EAS build {build['id']} is {build.get('status', 'queued')}: {url}")
    context.progress(100, "Queued on EAS")
    return {"eas_builds": builds}


# --- Flutter -------------------------------------------------------------------------------
def flutter_executor(context):
    params = context.params
    app = _app(context)
    register_secrets(context, app.account)
    if params.get("provider") == Provider.CI:
        return _store_document(
            context,
            app,
            ArtifactKind.WORKFLOW,
            f"buildhub-flutter-{params['platform']}.yml",
            "text/yaml",
            flutter_workflow(params, app),
        )
    subcommand, kind, output_dir = FLUTTER_OUTPUTS[(params["platform"], params["channel"])]
    if params["platform"] == Platform.IOS:
        raise JobFailed("iOS Flutter builds need macOS and Xcode; use provider ci")
    command = ["flutter", "--suppress-analytics", "build", subcommand, "--release"]
    if params.get("dry_run"):
        source = _source_if_given(context)
        return simulated_result(
            context, app, kind, {"command": command, "source_checked": source is not None}
        )
    flutter = find_tool(
        settings.FLUTTER_CLI, "Flutter", "install the Flutter SDK and put its bin/ on PATH"
    )
    context.progress(10, "Fetching the source")
    source = materialize(context, params.get("source"))
    if not (source / "pubspec.yaml").is_file():
        raise JobFailed("the source has no pubspec.yaml at its root: is it a Flutter app?")
    context.progress(20, f"Running flutter build {subcommand}")
    run_tool(context, [flutter, *command[1:]], env=tool_env(context, {}), cwd=source)
    extension = EXTENSIONS[kind]
    outputs = sorted((source / output_dir).glob(f"*{extension}"))
    if not outputs:
        raise JobFailed(f"flutter build {subcommand} finished but wrote no {extension} file")
    output = outputs[0]
    context.progress(90, f"Storing {output.name}")
    artifact = store_output(
        context,
        app,
        output,
        kind,
        "application/vnd.android.package-archive"
        if kind == ArtifactKind.APK
        else "application/octet-stream",
    )
    context.log(f"{output.name}: {artifact.size} bytes, sha256 {artifact.sha256}")
    context.progress(100, "Built")
    return {"artifact": str(artifact.pk), "sha256": artifact.sha256, "size": artifact.size}


def flutter_workflow(params: dict, app: App) -> str:
    """A GitHub Actions workflow that builds (and for stage submit uploads) in the customer's CI."""
    platform = params["platform"]
    subcommand, _, output_dir = FLUTTER_OUTPUTS[(platform, params["channel"])]
    extension = EXTENSIONS[FLUTTER_OUTPUTS[(platform, params["channel"])][1]]
    runner = "macos-latest" if platform == Platform.IOS else "ubuntu-latest"
    steps = [
        "      - uses: actions/checkout@v4",
        "      - uses: subosito/flutter-action@v2",
        "        with:",
        "          channel: stable",
        "          cache: true",
    ]
    if platform == Platform.ANDROID:
        steps += [
            "      - uses: actions/setup-java@v4",
            "        with:",
            "          distribution: temurin",
            "          java-version: '17'",
        ]
    steps += [
        "      - run: flutter pub get",
        f"      - run: flutter build {subcommand} --release",
        "      - uses: actions/upload-artifact@v4",
        "        with:",
        f"          name: {app.slug}-{platform}-{params['channel']}",
        f"          path: {output_dir}/*{extension}",
    ]
    if params.get("stage") == BuildStage.SUBMIT and platform == Platform.ANDROID:
        steps += [
            "      - uses: r0adkll/upload-google-play@v1",
            "        with:",
            "          serviceAccountJsonPlainText: ${{ secrets.PLAY_SERVICE_ACCOUNT_JSON }}",
            "          packageName: ${{ vars.ANDROID_PACKAGE_NAME }}",
            f"          releaseFiles: {output_dir}/*{extension}",
            f"          track: {'internal' if params['channel'] == 'preview' else 'production'}",
        ]
    elif params.get("stage") == BuildStage.SUBMIT:
        steps += [
            "      - uses: apple-actions/upload-testflight-build@v1",
            "        with:",
            f"          app-path: {output_dir}/*{extension}",
            "          issuer-id: ${{ secrets.APPSTORE_ISSUER_ID }}",
            "          api-key-id: ${{ secrets.APPSTORE_API_KEY_ID }}",
            "          api-private-key: ${{ secrets.APPSTORE_API_PRIVATE_KEY }}",
        ]
    header = [
        f"# Generated by BuildHub for {app.name} ({app.slug}): Flutter {platform}, "
        f"{params['channel']} channel, stage {params.get('stage', 'build')}.",
        "# Save as .github/workflows/ in the app's repository.",
        f"name: BuildHub Flutter {platform} {params['channel']}",
        "on:",
        "  workflow_dispatch:",
        "  push:",
        "    tags: ['v*']",
        "jobs:",
        "  build:",
        f"    runs-on: {runner}",
        "    steps:",
    ]
    return "\n".join(header + steps) + "\n"


# --- FlutterFlow (Mode A: the customer exports, BuildHub tells them how) -------------------
def flutterflow_executor(context):
    params = context.params
    app = _app(context)
    register_secrets(context, app.account)
    return _store_document(
        context,
        app,
        ArtifactKind.INSTRUCTIONS,
        "FLUTTERFLOW-INSTRUCTIONS.md",
        "text/markdown",
        flutterflow_instructions(context.job, params, app),
    )


def flutterflow_instructions(job, params: dict, app: App) -> str:
    platform, channel = params["platform"], params["channel"]
    subcommand = FLUTTER_OUTPUTS[(platform, channel)][0]
    store = "Google Play Console" if platform == Platform.ANDROID else "App Store Connect"
    lines = [
        f"# {app.name}: FlutterFlow export and publish ({platform}, {channel})",
        "",
        "| | |",
        "|---|---|",
        f"| Job | `{job.pk}` |",
        f"| App | `{app.slug}` |",
        f"| Platform | {platform} |",
        f"| Channel | {channel} |",
        f"| Provider | {params.get('provider', 'ci')} |",
        f"| Requested | {job.created_at:%Y-%m-%d %H:%M} UTC |",
        "",
        "## 1. Export the code from FlutterFlow",
        "",
        "1. Open the project in FlutterFlow and fix every issue the checker reports.",
        "2. Developer Menu → **Download Code** (or `flutterflow export-code --project <id> "
        "--dest . --include-assets` with the FlutterFlow CLI).",
        "3. Commit the exported folder to the app's repository.",
        "",
        "## 2. Build",
        "",
    ]
    if params.get("provider") == Provider.LOCAL:
        lines += [
            "Upload the exported folder as a .tar.gz or .zip (`POST /api/v1/apps/"
            f"{app.slug}/sources/`) and request a `flutter` build with provider `local`, "
            f"or run `flutter build {subcommand} --release` on a machine with the Flutter SDK"
            + (" and Xcode (macOS)." if platform == Platform.IOS else "."),
        ]
    else:
        lines += [
            f"Request a `flutter` build with provider `ci` for {platform}: BuildHub answers "
            "with a GitHub Actions workflow; save it under `.github/workflows/` and run it. "
            f"It runs `flutter build {subcommand} --release`.",
        ]
    lines += [
        "",
        f"## 3. Publish to the {store}",
        "",
        f"Upload the {'app bundle or APK' if platform == Platform.ANDROID else '.ipa'} to the "
        f"{store} ({'internal testing' if channel == 'preview' else 'production'} track) and "
        "roll it out.",
        "",
    ]
    return "\n".join(lines)


def _store_document(context, app, kind, filename: str, content_type: str, text: str) -> dict:
    context.progress(50, f"Writing {filename}")
    path = context.workspace / filename
    path.write_text(text)
    artifact = store_output(context, app, path, kind, content_type)
    context.log(f"{filename}: {artifact.size} bytes, artifact {artifact.pk}")
    context.progress(100, "Done")
    return {"artifact": str(artifact.pk), "sha256": artifact.sha256}
