"""buildhub: build, follow, publish and roll back from a CI pipeline.

Configuration: BUILDHUB_URL (the server) and BUILDHUB_TOKEN (an API token of the account).

Exit codes: 0 the job succeeded (or the command did what it says); 1 the build failed, or
the server could not be reached or failed; 2 a usage or auth error (bad arguments, missing
or refused token, a request the server refused as invalid); 3 the wait was cut short: the job
timed out or was cancelled, ``--wait-timeout`` passed, or Ctrl-C / SIGTERM stopped the wait
(without a TTY the job is left running and the command says so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

from buildhub_cli import __version__
from buildhub_cli.api import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, Client, CliError
from buildhub_cli.follow import Follower, WaitTimeout
from buildhub_cli.packing import MB, PackingRefused, pack_directory

TARGETS = ("ota", "expo", "flutter", "flutterflow")
PLATFORMS = ("android", "ios")
CHANNELS = ("preview", "production")
ENVIRONMENTS = ("dev", "staging", "production")
STATUS_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_STOPPED}
STATUS_EXIT["timed_out"] = EXIT_STOPPED
GIT_URL = re.compile(r"^(https?://|ssh://|git@|[\w.-]+@[\w.-]+:)")

# CI systems and the variables that name one run of one job. A step retried inside the same
# job sends the same key (the server answers with the first job); a new attempt of the job
# (GitHub's "Re-run", GitLab's "Retry", which get a new attempt number or job id) builds again.
CI_RUN_VARIABLES = (
    (
        "github",
        "GITHUB_RUN_ID",
        ("GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB"),
    ),
    ("gitlab", "CI_JOB_ID", ("CI_PROJECT_ID", "CI_PIPELINE_ID", "CI_JOB_ID")),
    ("circleci", "CIRCLE_WORKFLOW_ID", ("CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_NUM")),
    (
        "buildkite",
        "BUILDKITE_JOB_ID",
        ("BUILDKITE_BUILD_ID", "BUILDKITE_JOB_ID", "BUILDKITE_RETRY_COUNT"),
    ),
    ("azure", "BUILD_BUILDID", ("BUILD_BUILDID", "SYSTEM_JOBID", "SYSTEM_JOBATTEMPT")),
    ("bitbucket", "BITBUCKET_STEP_UUID", ("BITBUCKET_PIPELINE_UUID", "BITBUCKET_STEP_UUID")),
    ("jenkins", "BUILD_TAG", ("BUILD_TAG",)),
)


def ci_run(environ=None) -> str | None:
    """``provider:values`` naming this CI run and job, or None outside CI."""
    environ = os.environ if environ is None else environ
    for provider, marker, names in CI_RUN_VARIABLES:
        if environ.get(marker):
            return provider + ":" + ":".join(environ.get(name, "") for name in names)
    return None


def idempotency_key(what: list[str], environ=None) -> str:
    """The Idempotency-Key of a submission: BUILDHUB_IDEMPOTENCY_KEY if set, else derived from
    the CI run and what is submitted; empty outside CI (every call queues)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("BUILDHUB_IDEMPOTENCY_KEY", "")
    run = ci_run(environ)
    if explicit:
        run = "explicit:" + explicit
    if run is None:
        return ""
    digest = hashlib.sha256("\n".join([run, *what]).encode()).hexdigest()[:40]
    return f"cli-{run.split(':', 1)[0]}-{digest}"


# --- output --------------------------------------------------------------------------------
class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.log = sys.stderr if as_json else sys.stdout  # stdout keeps the JSON alone

    def say(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def result(self, data, text: str) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        elif text:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()


def describe_artifacts(artifacts: list[dict]) -> str:
    return "\n".join(
        f"  {a['kind']} {a.get('platform') or ''} {a['size']} bytes sha256={a['sha256']} "
        f"id={a['id']}".replace("  ", " ", 1).rstrip()
        for a in artifacts
    )


# --- following with Ctrl-C -------------------------------------------------------------------
class Stopped(Exception):
    pass


def _terminated(signum, frame):
    raise Stopped


def wait_for(client: Client, job_id: str, out: Output, args) -> tuple[int, bool]:
    """Follow the job to its end: the exit code its final status means, and whether it
    ended (False when the wait was cut short)."""
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout else None
    follower = Follower(client, job_id, out.log, deadline=deadline)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        status = follower.run()
    except WaitTimeout:
        out.say(
            f"Stopped waiting after {args.wait_timeout} s; job {job_id} goes on "
            f"(buildhub logs {job_id} --follow)."
        )
        return EXIT_STOPPED, False
    except (KeyboardInterrupt, Stopped):
        return interrupted(client, job_id, out, args), False
    finally:
        signal.signal(signal.SIGTERM, previous)
    out.say(f"Job {job_id} {status}.")
    return STATUS_EXIT.get(status, EXIT_FAILED), True


def interrupted(client: Client, job_id: str, out: Output, args) -> int:
    cancel = getattr(args, "cancel_on_interrupt", False)
    if not cancel and sys.stdin.isatty():
        try:
            answer = input(f"\nCancel job {job_id}? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
        cancel = answer.strip().lower() in ("y", "yes")
    if cancel:
        job = client.post(f"/api/v1/jobs/{job_id}/cancel/")
        out.say(f"Job {job_id}: cancel requested ({job['status']}).")
    else:
        out.say(
            f"\nStopped waiting; job {job_id} is still running on BuildHub. Follow it with "
            f"`buildhub logs {job_id} --follow`, cancel it with `buildhub cancel {job_id}`."
        )
    return EXIT_STOPPED


# --- commands ------------------------------------------------------------------------------
def source_of(client: Client, args, out: Output) -> dict | None:
    source = args.source
    if source is None:
        if args.target == "flutterflow" or args.dry_run:
            return None
        source = "."
    if GIT_URL.match(source):
        return {"git": source, "ref": args.ref or ""}
    path = Path(source)
    if not path.exists():
        raise CliError(f"--source {source}: no such directory or archive.", EXIT_USAGE)
    with tempfile.TemporaryFile() as archive:
        if path.is_dir():
            try:
                packed = pack_directory(path, archive)
            except PackingRefused as refusal:
                raise CliError(f"The source cannot be uploaded: {refusal}", EXIT_USAGE) from None
            name = f"{Path(os.path.realpath(path)).name or 'source'}.tar.gz"
            out.say(
                f"Packed {len(packed.files)} files "
                f"({packed.unpacked_bytes / MB:.1f} MB) from {path}."
            )
        else:
            with open(path, "rb") as handle:
                head = handle.read(4)
                if head[:2] != b"\x1f\x8b" and head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
                    raise CliError(f"{path}: not a .tar.gz or .zip archive.", EXIT_USAGE)
                handle.seek(0)
                while chunk := handle.read(MB):
                    archive.write(chunk)
            name = path.name
        size = archive.tell()
        limit = upload_limit(client)  # after packing: a refused source asks nothing
        if limit is not None and size > limit * MB:
            raise CliError(
                f"The source archive is {size / MB:.1f} MB; this account's tier allows {limit} MB "
                "uploads. Add what the build does not need to .gitignore.",
                EXIT_USAGE,
            )
        archive.seek(0)
        out.say(f"Uploading {name} ({size / MB:.1f} MB)...")
        upload = send_source(client, args.app, name, archive, size)
    return {"upload": upload["id"]}


def send_source(client: Client, app: str, name: str, archive, size: int) -> dict:
    """Straight to the storage bucket when the server offers it (the archive never passes
    through its web processes), else as a multipart upload to the API."""
    digest = hashlib.sha256()
    while chunk := archive.read(MB):
        digest.update(chunk)
    archive.seek(0)
    body = {"filename": name, "size": size, "sha256": digest.hexdigest()}
    try:
        started = client.post(f"/api/v1/apps/{app}/sources/direct/", body)
    except CliError as failure:
        if failure.code != "direct_upload_unavailable":
            raise
        return client.upload(f"/api/v1/apps/{app}/sources/", name, archive, size)
    client.send_form(started["upload"], name, archive, size)
    return client.post(started["complete_url"])


def upload_limit(client: Client) -> int | None:
    """The account's source upload limit in MB, when the token may read its account."""
    try:
        accounts = client.get("/api/v1/accounts/")
    except CliError as failure:
        if failure.exit_code == EXIT_USAGE and failure.status != 401:
            return None  # a token without builds:read: the server checks the size itself
        raise
    rows = accounts.get("results", accounts) if isinstance(accounts, dict) else accounts
    return rows[0]["limits"]["max_source_upload_mb"] if rows else None


def build(client: Client, args, out: Output) -> int:
    source = source_of(client, args, out)
    body = {"app": args.app, "target": args.target, "platform": args.platform}
    for name in ("channel", "stage", "provider"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.timeout_minutes:
        body["timeout_minutes"] = args.timeout_minutes
    if args.dry_run:
        body["dry_run"] = True
    if source is not None:
        body["source"] = source
    key = args.idempotency_key or idempotency_key(
        ["build", args.app, args.target, args.platform, args.channel or ""]
    )
    headers = {"Idempotency-Key": key} if key else {}
    job = client.post("/api/v1/builds/", body, headers=headers)
    out.say(f"Build {job['id']} {job['status']} ({args.app} {args.target} {args.platform}).")
    if not args.wait:
        out.result(job, job["id"])
        return EXIT_OK
    code, ended = wait_for(client, job["id"], out, args)
    if not ended:
        out.result(job, "")
        return code
    final = client.get_waiting(f"/api/v1/builds/{job['id']}/")
    if final.get("error"):
        out.say(f"Error: {final['error']}")
    if final.get("artifacts"):
        out.say("Artifacts:\n" + describe_artifacts(final["artifacts"]))
    out.result(final, "")
    return code


def logs(client: Client, args, out: Output) -> int:
    if args.follow:
        follower = Follower(client, args.job, sys.stdout, quiet=True)
        try:
            status = follower.run()
        except (KeyboardInterrupt, Stopped):
            return EXIT_STOPPED
        return STATUS_EXIT.get(status, EXIT_FAILED)
    after = 0
    while True:
        page = client.get_waiting(f"/api/v1/jobs/{args.job}/logs/?after={after}")
        for line in page["lines"]:
            level = "" if line["level"] == "info" else f"{line['level'].upper()} "
            sys.stdout.write(f"{level}{line['message']}\n")
        after = page["next_after"]
        if not page["has_more"]:
            return EXIT_OK


def artifacts(client: Client, args, out: Output) -> int:
    job = client.get_waiting(f"/api/v1/builds/{args.job}/")
    rows = job.get("artifacts") or []
    if args.download:
        target = Path(args.download)
        target.mkdir(parents=True, exist_ok=True)
        for row in rows:
            suffix = {"ota_bundle": ".hbc", "sourcemap": ".map"}.get(row["kind"], "")
            path = target / f"{row['kind']}-{row.get('platform') or 'any'}-{row['id']}{suffix}"
            with open(path, "wb") as handle:
                client.download(row["download_url"], handle)
            out.say(f"Downloaded {path} ({row['size']} bytes)")
    out.result(rows, describe_artifacts(rows) if rows else f"Job {args.job} has no artifacts.")
    return EXIT_OK


def cancel(client: Client, args, out: Output) -> int:
    job = client.post(f"/api/v1/jobs/{args.job}/cancel/")
    pending = " (stopping)" if job.get("cancel_requested") and job["status"] == "running" else ""
    out.result(job, f"Job {job['id']} {job['status']}{pending}.")
    return EXIT_OK


def version(client: Client, args, out: Output) -> int:
    made = client.post(f"/api/v1/apps/{args.app}/versions/", {"build": args.build})
    builds = ", ".join(args.build)
    out.result(made, f"Version {made['number']} of {args.app} from build {builds}.")
    return EXIT_OK


def publish(client: Client, args, out: Output) -> int:
    body = {"target_environment": args.env}
    if args.rollout is not None:
        body["rollout_percent"] = args.rollout
    if args.mandatory:
        body["mandatory"] = True
    key = args.idempotency_key or idempotency_key(
        ["publish", args.app, str(args.version), args.env, str(args.rollout)]
    )
    headers = {"Idempotency-Key": key} if key else {}
    job = client.post(
        f"/api/v1/apps/{args.app}/versions/{args.version}/publish/", body, headers=headers
    )
    out.say(
        f"Publish {job['id']} of {args.app} version {args.version} to {args.env}: {job['status']}."
    )
    if not args.wait:
        out.result(job, job["id"])
        return EXIT_OK
    code, ended = wait_for(client, job["id"], out, args)
    out.result(client.get_waiting(f"/api/v1/jobs/{job['id']}/") if ended else job, "")
    return code


def rollback(client: Client, args, out: Output) -> int:
    body = {"to": "embedded"} if args.to_embedded else {}
    release = client.post(f"/api/v1/apps/{args.app}/releases/{args.env}/rollback/", body)
    out.result(release, f"{args.app} {args.env} rolled back: {json.dumps(release)}")
    return EXIT_OK


def status(client: Client, args, out: Output) -> int:
    accounts = client.get_waiting("/api/v1/accounts/")
    rows = accounts.get("results", []) if isinstance(accounts, dict) else accounts
    active = client.get_waiting("/api/v1/jobs/?status=queued,running")
    jobs = active.get("results", [])
    data = {"account": rows[0] if rows else None, "active_jobs": jobs}
    lines = []
    if rows:
        account, usage = rows[0], rows[0].get("usage") or {}
        limit = usage.get("builds_limit")
        lines.append(
            f"{account['name']} ({account['slug']}), {account['tier']} tier: "
            f"{usage.get('builds_used', 0)} of {limit if limit is not None else 'unlimited'} "
            "builds this month"
        )
    lines.append(f"{active.get('count', len(jobs))} job(s) queued or running")
    for job in jobs:
        where = describe_queue_short(job)
        lines.append(f"  {job['id']} {job['kind']} {job['status']} {where}".rstrip())
    out.result(data, "\n".join(lines))
    return EXIT_OK


def describe_queue_short(job: dict) -> str:
    if job["status"] == "running":
        return f"{job.get('progress', 0)}% {job.get('stage') or ''}".strip()
    position = job.get("queue_position")
    return f"position {position}" if position is not None else ""


# --- arguments -------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="buildhub",
        description="BuildHub from CI: BUILDHUB_URL and BUILDHUB_TOKEN configure it.",
        epilog="Exit codes: 0 success, 1 build failed (or the server failed), 2 usage or auth "
        "error, 3 timed out, cancelled or interrupted.",
    )
    top.add_argument("--version", action="version", version=f"buildhub {__version__}")
    top.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    commands = top.add_subparsers(dest="command", required=True)

    def waiting(command):
        command.add_argument("--wait", action="store_true", help="follow the job to its end")
        command.add_argument(
            "--wait-timeout", type=int, metavar="SECONDS", help="stop waiting after"
        )
        command.add_argument(
            "--cancel-on-interrupt",
            action="store_true",
            help="cancel the job when the wait is interrupted (Ctrl-C, or the SIGTERM a "
            "cancelled CI job gets)",
        )
        command.add_argument("--idempotency-key", help="instead of the one derived from the CI run")
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    command = commands.add_parser("build", help="upload the source and queue a build")
    command.add_argument("--app", required=True, help="the app's slug")
    command.add_argument("--target", required=True, choices=TARGETS)
    command.add_argument("--platform", required=True, choices=PLATFORMS)
    command.add_argument("--channel", choices=CHANNELS)
    command.add_argument("--source", help="a directory (default .), a .tar.gz/.zip or a git URL")
    command.add_argument("--ref", help="with a git URL: branch, tag or commit")
    command.add_argument("--stage", choices=("build", "submit"))
    command.add_argument("--provider", choices=("eas", "local", "ci"))
    command.add_argument("--timeout-minutes", type=int, help="the build's own time limit")
    command.add_argument("--dry-run", action="store_true", help="store targets: simulate")
    waiting(command)
    command.set_defaults(handler=build)

    command = commands.add_parser("logs", help="a job's log")
    command.add_argument("job")
    command.add_argument("--follow", action="store_true", help="until the job ends")
    command.set_defaults(handler=logs)

    command = commands.add_parser("artifacts", help="a build's artifacts")
    command.add_argument("job")
    command.add_argument("--download", metavar="DIR", help="download them into DIR")
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    command.set_defaults(handler=artifacts)

    command = commands.add_parser("cancel", help="cancel a job")
    command.add_argument("job")
    command.set_defaults(handler=cancel)

    command = commands.add_parser("version", help="make a version of an app from its builds")
    command.add_argument("--app", required=True)
    command.add_argument(
        "--build", required=True, action="append", metavar="JOB", help="a build (repeatable)"
    )
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    command.set_defaults(handler=version)

    command = commands.add_parser("publish", help="publish a version to an environment")
    command.add_argument("--app", required=True)
    command.add_argument("--version", required=True, type=int)
    command.add_argument("--env", required=True, choices=ENVIRONMENTS)
    command.add_argument("--rollout", type=int, metavar="PERCENT")
    command.add_argument("--mandatory", action="store_true")
    waiting(command)
    command.set_defaults(handler=publish)

    command = commands.add_parser("rollback", help="back to the previous release")
    command.add_argument("--app", required=True)
    command.add_argument("--env", required=True, choices=ENVIRONMENTS)
    command.add_argument("--to-embedded", action="store_true", help="to the binaries' own bundle")
    command.set_defaults(handler=rollback)

    command = commands.add_parser("status", help="the account's usage and its active jobs")
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    command.set_defaults(handler=status)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error
    out = Output(args.json)
    try:
        return args.handler(Client(), args, out)
    except CliError as failure:
        sys.stderr.write(f"buildhub: error: {failure}\n")
        return failure.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("buildhub: interrupted\n")
        return EXIT_STOPPED
    except BrokenPipeError:
        return EXIT_FAILED
