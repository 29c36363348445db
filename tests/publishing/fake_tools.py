"""Fake ``eas`` and ``flutter`` executables that behave like the real CLIs for our use.

Like the real tools they need a project in their working directory (app.json, pubspec.yaml),
print progress on stderr (eas) or stdout (flutter), JSON on stdout with ``--json``, and exit
non-zero on failure. The mode is baked into the script: the executors give tools a clean
environment, so a variable set by the test would not reach them. Each run prints what it saw
(argv, cwd, environment names, the token's digest, its user, the processes and network it
sees) as one ``FAKE_CALL <tool> {json}`` line on stderr, which lands in the job's log: the
tools run in the build sandbox, where nothing outside the job's workspace is writable.
"""

import json
import os
import stat
from pathlib import Path

COMMON = r"""
import hashlib, json, os, sys, time, uuid
from pathlib import Path
MODE = {mode!r}
NAME = {name!r}

def record():
    token = os.environ.get("EXPO_TOKEN", "")
    seen = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": sorted(os.environ),
        "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else "",
        "uid": os.getuid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "links": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else
            [line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]]}}
    print("FAKE_CALL", NAME, json.dumps(seen), file=sys.stderr, flush=True)

def slow(stream):
    for i in range(3000):
        print(f"still working ({{i}})", file=stream, flush=True)
        time.sleep(0.1)
"""

EAS = r"""
args = sys.argv[1:]
if args[:1] in (["--version"], ["-v"]):
    print("eas-cli/16.3.0 linux-x64 node-v20.18.0"); sys.exit(0)
record()
command = args[0] if args else ""
if command not in ("build", "submit"):
    print(f"command {command} not found", file=sys.stderr); sys.exit(2)
if "--json" in args and "--non-interactive" not in args:
    print("--json is allowed only with --non-interactive", file=sys.stderr); sys.exit(1)
if not os.environ.get("EXPO_TOKEN"):
    print("An Expo user account is required to proceed.", file=sys.stderr)
    print("Either log in with eas login or set the EXPO_TOKEN environment variable.",
          file=sys.stderr)
    sys.exit(1)
if not Path("app.json").exists() and not Path("app.config.js").exists():
    print("Run this command inside a project directory.", file=sys.stderr); sys.exit(1)
platform = args[args.index("--platform") + 1]
profile = args[args.index("--profile") + 1]
print(f"Logged in with token {os.environ['EXPO_TOKEN']}", file=sys.stderr, flush=True)
if MODE == "slow":
    slow(sys.stderr)
if MODE == "fail":
    print(f"Build profile '{profile}' is missing in eas.json", file=sys.stderr); sys.exit(1)
if MODE == "garbage":
    print("this is not json"); sys.exit(0)
print("Compressing project files and uploading to EAS Build", file=sys.stderr)
slug = json.loads(Path("app.json").read_text())["expo"]["slug"]
project = {"__typename": "App", "id": "p-1", "slug": slug, "ownerAccount": {"name": "acme"}}
if command == "submit":
    out = [{"id": str(uuid.uuid4()), "status": "IN_QUEUE", "platform": platform.upper()}]
else:
    out = [{"id": str(uuid.uuid4()), "platform": platform.upper(), "status": "NEW",
            "buildProfile": profile, "project": project, "artifacts": None}]
print(json.dumps(out, indent=2))
"""

FLUTTER = r"""
args = [a for a in sys.argv[1:] if a != "--suppress-analytics"]
if args[:1] == ["--version"]:
    print("Flutter 3.24.5 • channel stable"); sys.exit(0)
record()
if args[:1] != ["build"] or len(args) < 2:
    print("Could not find a command named", args, file=sys.stderr); sys.exit(64)
if not Path("pubspec.yaml").exists():
    print("Error: No pubspec.yaml file found.", flush=True); sys.exit(1)
target = args[1]
print("Resolving dependencies...", flush=True)
if MODE == "slow":
    slow(sys.stdout)
if MODE == "fail":
    print("lib/main.dart:3:1: Error: Expected ';' after this.", flush=True)
    print("Gradle task assembleRelease failed with exit code 1", flush=True)
    sys.exit(1)
outputs = {"apk": "build/app/outputs/flutter-apk/app-release.apk",
           "appbundle": "build/app/outputs/bundle/release/app-release.aab"}
if target not in outputs:
    print(f"Could not find a subcommand named {target}", flush=True); sys.exit(64)
out = Path(outputs[target])
if MODE != "no-output":
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"PK\x03\x04 fake " + target.encode() + b" " + os.urandom(64))
print(f"Running Gradle task '{'bundleRelease' if target == 'appbundle' else 'assembleRelease'}'...")
print(f"\u2713 Built {out} (0.1MB)", flush=True)
"""


def write_tool(bin_dir: Path, name: str, body: str, mode: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    # The system's Python: the sandbox shows /usr, not the worker's virtual environment.
    path.write_text("#!/usr/bin/python3\n" + COMMON.format(mode=mode, name=name) + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def install(bin_dir: Path, *, eas: str | None = "success", flutter: str | None = "success"):
    """Write the fakes (a mode, or None for "not installed") and return the new PATH."""
    if eas:
        write_tool(bin_dir, "eas", EAS, eas)
    if flutter:
        write_tool(bin_dir, "flutter", FLUTTER, flutter)
    return f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def calls(job, name: str) -> list[dict]:
    """What each run of the tool saw, from the job's log."""
    prefix = f"FAKE_CALL {name} "
    lines = job.logs.order_by("seq").values_list("message", flat=True)
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


def running(tool: Path) -> bool:
    """Whether any process on this machine still runs ``tool``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(tool).encode() in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False
