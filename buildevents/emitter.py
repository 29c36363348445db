#!/usr/bin/env python3
"""buildhub-emit: report a build's lifecycle to BuildHub without ever failing the build.

Standard library only, so this one file can be copied onto any build host and run with
``python3 emitter.py ...``; installed with BuildHub it is the ``buildhub-emit`` command.

    buildhub-emit run [--env prod] [--origin server] -- npm run build:deploy
    buildhub-emit stage "Backend Clean" -- make clean      (inside a run)
    buildhub-emit event stage_started --stage "Upload"    (by hand, from scripts)

Configuration: BUILDHUB_URL (the server, e.g. https://buildhub.example.com) and
BUILDHUB_BUILD_TOKEN (a token with the events:write scope). ``run`` exports BUILDHUB_RUN_ID
to the command, which is how ``stage`` and ``event`` find their run.

Events go out from a background thread with short timeouts through a bounded queue; the
command's output passes through untouched and its exit code is the emitter's. When the
server is unreachable or slow, one warning is printed and the build goes on: reporting costs
the command less than a second in all.
"""

from __future__ import annotations  # runs on the Python 3.8+ of older build hosts too

import argparse
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

ENDPOINT_PATH = "/api/v1/internal/build-events/"
REQUEST_TIMEOUT = 2.0  # seconds per request, in the background thread
FLUSH_DEADLINE = float(os.environ.get("BUILDHUB_FLUSH_SECONDS") or 0.5)  # at the end, at most
QUEUE_SIZE = 1000
BATCH_SIZE = 100
HEARTBEAT_SECONDS = float(os.environ.get("BUILDHUB_HEARTBEAT_SECONDS") or 25)
ENVS = ("prod", "staging", "dev")
ORIGINS = ("server", "frontend", "root-harness", "other")
EVENTS = (
    "build_started",
    "stage_started",
    "stage_completed",
    "build_completed",
    "build_failed",
    "heartbeat",
)
MAX_COMMAND_CHARS = 1000


def now_iso() -> str:
    moment = datetime.now(timezone.utc)  # noqa: UP017 - datetime.UTC is Python 3.11+
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"buildhub-emit: warning: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


class Sender:
    """Posts events in batches from a daemon thread; never raises into the build."""

    def __init__(self, url: str, token: str):
        self.endpoint = url.rstrip("/") + ENDPOINT_PATH if url else ""
        self.token = token
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.failed = threading.Event()  # the server could not be reached: stop trying
        self.idle = threading.Condition()
        self.pending = 0
        self.warned = False
        self.dropped = 0
        if not self.endpoint or not token:
            missing = "BUILDHUB_URL" if not self.endpoint else "BUILDHUB_BUILD_TOKEN"
            self._warn_once(f"{missing} is not set; this build is not reported")
            self.failed.set()
            return
        threading.Thread(target=self._run, name="buildhub-emit", daemon=True).start()

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            warn(message)

    def send(self, event: dict) -> None:
        if self.failed.is_set():
            return
        event.setdefault("eventId", str(uuid.uuid4()))
        event.setdefault("ts", now_iso())
        with self.idle:
            try:
                self.queue.put_nowait(event)
            except queue.Full:  # the server is slower than the build: drop, never wait
                self.dropped += 1
                return
            self.pending += 1

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if not self.failed.is_set():
                self._post(batch)
            with self.idle:
                self.pending -= len(batch)
                self.idle.notify_all()

    def _post(self, batch: list) -> None:
        body = json.dumps(batch).encode()
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Build-Token": self.token,
                "User-Agent": "buildhub-emit/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as error:
            detail = ""
            with contextlib.suppress(ValueError, AttributeError, OSError):
                detail = json.loads(error.read() or b"{}").get("error", {}).get("message", "")
            self._warn_once(f"BuildHub refused the events (HTTP {error.code}) {detail}".strip())
            if error.code in (401, 403):
                self.failed.set()
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            self._warn_once(
                f"cannot reach BuildHub at {self.endpoint} ({reason}); "
                "the build goes on without reporting"
            )
            self.failed.set()

    def close(self, deadline: float = FLUSH_DEADLINE) -> None:
        """Wait up to ``deadline`` seconds for what is queued; the rest is dropped."""
        end = time.monotonic() + deadline
        with self.idle:
            while self.pending and not self.failed.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    self._warn_once("BuildHub is slow; some events were not sent")
                    break
                self.idle.wait(left)


def _git(*args) -> str:
    try:
        result = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=1,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def git_details() -> dict:
    """repo, branch and commit when run inside a git work tree; nothing otherwise."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {}
    repo = _git("config", "--get", "remote.origin.url") or os.path.basename(
        _git("rev-parse", "--show-toplevel")
    )
    return {
        "repo": repo[:500],
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD")[:255],
        "commit": commit[:64],
    }


def _exit_status(returncode: int) -> int:
    """A signal death becomes 128 + signal, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def run_command(argv: list, env: dict | None = None) -> tuple[int, int]:
    """Run the command with the terminal's stdio; returns (exit status, duration ms)."""
    started = time.monotonic()
    try:
        child = subprocess.Popen(argv, env=env)
    except FileNotFoundError:
        warn(f"command not found: {argv[0]}")
        return 127, 0
    except PermissionError:
        warn(f"command not executable: {argv[0]}")
        return 126, 0

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(OSError, ValueError):
            previous[signum] = signal.signal(signum, forward)
    try:
        while True:
            try:
                returncode = child.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reached the command too; wait for it to end
                continue
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _exit_status(returncode), int((time.monotonic() - started) * 1000)


class Heartbeat:
    def __init__(self, sender: Sender, base: dict):
        self.sender, self.base = sender, base
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="buildhub-heartbeat", daemon=True).start()

    def _run(self):
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            self.sender.send({**self.base, "event": "heartbeat"})

    def stop(self):
        self.stopped.set()


def _command_text(argv: list, name: str | None) -> str:
    return (name or subprocess.list2cmdline(argv))[:MAX_COMMAND_CHARS]


def cmd_run(args, sender: Sender) -> int:
    run_id = str(uuid.uuid4())
    base = {"runId": run_id}
    started = {
        **base,
        "event": "build_started",
        "ts": now_iso(),
        "env": args.env,
        "origin": args.origin,
        "command": _command_text(args.command, args.name),
        "host": socket.gethostname()[:255],
        "pid": os.getpid(),
    }
    env = {**os.environ, "BUILDHUB_RUN_ID": run_id}
    heartbeat = None
    details_ready = threading.Event()

    def announce():  # git runs while the command already does
        started.update(git_details())
        sender.send(started)
        details_ready.set()

    threading.Thread(target=announce, daemon=True).start()
    heartbeat = Heartbeat(sender, base)
    status, duration_ms = run_command(args.command, env)
    heartbeat.stop()
    details_ready.wait(0.3)  # late git details must not hold the build up
    ended = {
        **base,
        "event": "build_completed" if status == 0 else "build_failed",
        "durationMs": duration_ms,
        "payload": {"exitCode": status},
    }
    if status:
        ended["message"] = f"exit code {status}"
    sender.send(ended)
    return status


def cmd_stage(args, sender: Sender) -> int:
    run_id = args.run_id or os.environ.get("BUILDHUB_RUN_ID", "")
    if not run_id:
        warn("no run (BUILDHUB_RUN_ID is not set; use it inside `buildhub-emit run`)")
        return run_command(args.command)[0]
    base = {"runId": run_id, "stage": args.name[:200]}
    sender.send({**base, "event": "stage_started"})
    status, duration_ms = run_command(args.command)
    completed = {
        **base,
        "event": "stage_completed",
        "durationMs": duration_ms,
        "payload": {"exitCode": status},
    }
    if status:
        completed["message"] = f"stage failed with exit code {status}"
    sender.send(completed)
    return status


def cmd_event(args, sender: Sender) -> int:
    run_id = args.run_id or os.environ.get("BUILDHUB_RUN_ID", "")
    if not run_id:
        run_id = str(uuid.uuid4())
        print(run_id)  # a new run: scripts keep this id for their next events
    event = {"runId": run_id, "event": args.event}
    for key, value in (
        ("stage", args.stage),
        ("message", args.message),
        ("env", args.env),
        ("origin", args.origin),
        ("command", args.command_name),
        ("durationMs", args.duration_ms),
    ):
        if value is not None:
            event[key] = value
    if args.event == "build_started":
        event.setdefault("host", socket.gethostname()[:255])
        event.update({key: value for key, value in git_details().items() if value})
    if args.exit_code is not None:
        event["payload"] = {"exitCode": args.exit_code}
    sender.send(event)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="buildhub-emit",
        description="Report a build's lifecycle to BuildHub (BUILDHUB_URL, BUILDHUB_BUILD_TOKEN).",
    )
    commands = root.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="run a whole build and report it")
    run.add_argument("--env", choices=ENVS, default="prod")
    run.add_argument("--origin", choices=ORIGINS, default="other")
    run.add_argument("--name", help="what to call the build (default: the command line)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- the build command")
    stage = commands.add_parser("stage", help="run one stage of a build inside `run`")
    stage.add_argument("name")
    stage.add_argument("--run-id")
    stage.add_argument("command", nargs=argparse.REMAINDER, help="-- the stage's command")
    event = commands.add_parser("event", help="send one event by hand")
    event.add_argument("event", choices=EVENTS)
    event.add_argument("--run-id", help="default: BUILDHUB_RUN_ID, else a new run (printed)")
    event.add_argument("--stage")
    event.add_argument("--message")
    event.add_argument("--env", choices=ENVS)
    event.add_argument("--origin", choices=ORIGINS)
    event.add_argument("--command", dest="command_name")
    event.add_argument("--duration-ms", type=int)
    event.add_argument("--exit-code", type=int)
    return root


def main(argv: list | None = None) -> int:
    args = parser().parse_args(argv)
    if args.action in ("run", "stage"):
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser().error(f"{args.action}: give the command after --")
        args.command = command
    sender = Sender(os.environ.get("BUILDHUB_URL", ""), os.environ.get("BUILDHUB_BUILD_TOKEN", ""))
    handler = {"run": cmd_run, "stage": cmd_stage, "event": cmd_event}[args.action]
    try:
        status = handler(args, sender)
    finally:
        sender.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
