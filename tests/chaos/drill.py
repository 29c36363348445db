"""The fault drill: a stream of diagnostic.sleep jobs, websocket followers, injected faults.

``python -m tests.chaos [--kill-rounds N] [--redis-seconds S] [--quick] [--only a,b]``

Phases (each one: inject while jobs flow, stop submitting, wait for every job to end, check):

- ``kill``: N rounds of kill -9 of the process executing a job (its tool dies with it);
- ``sigterm``: SIGTERM of a busy worker (``runcluster``): it drains and the supervisor
  starts another;
- ``redis``: the private Redis stopped for S seconds while jobs are submitted;
- ``postgres``: the private PostgreSQL cluster restarted (fast shutdown) under load;
- ``web``: daphne restarted while websocket clients follow jobs.

Checks after each phase, over every job so far: each reached a terminal state; no two
executions of one job overlapped (marker files: the child's start/end lines, and for a killed
child the last time its pid was seen alive); no account ran more jobs at once than its
concurrency limit; each websocket follower got log lines 1..log_seq exactly once across its
reconnections (``?after=``) and the final status; no workspace is left.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

from tests.chaos.stack import ROOT, PrivatePostgres, PrivateRedis, Services

ENGINE = {
    "JOB_LEASE_SECONDS": "8",
    "JOB_HEARTBEAT_SECONDS": "2",
    "JOB_POLL_SECONDS": "0.2",
    "JOB_RETRY_BASE_SECONDS": "1",
    "JOB_KILL_GRACE_SECONDS": "2",
    "REAPER_INTERVAL_SECONDS": "1",
    "RECONCILE_INTERVAL_SECONDS": "1",
    "WORKER_DRAIN_GRACE_SECONDS": "4",
    "WORKER_IDLE_SECONDS": "600",
    "BUILDHUB_WORKERS": "2",
    "DJANGO_Q_LOG_LEVEL": "WARNING",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--kill-rounds", type=int, default=20)
    parser.add_argument("--redis-seconds", type=float, default=30)
    parser.add_argument("--clusters", type=int, default=2, help="workers (runcluster)")
    parser.add_argument("--only", default="kill,sigterm,redis,postgres,web")
    parser.add_argument(
        "--quick", action="store_true", help="CI variant: 3 kill rounds, Redis stopped 5 s"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "chaos")
    args = parser.parse_args(argv)
    if args.quick:
        args.kill_rounds, args.redis_seconds, args.only = 3, 5, "kill,redis"
    args.out = args.out.resolve()
    args.phases = [name.strip() for name in args.only.split(",") if name.strip()]
    return args


def with_database(call, attempts=120):
    """Run an ORM call, retrying while the database restarts (connections are re-opened)."""
    from django.db import DatabaseError, close_old_connections, connections

    for attempt in range(attempts):
        try:
            return call()
        except DatabaseError:
            if attempt == attempts - 1:
                raise
            for conn in connections.all():
                conn.close_if_unusable_or_obsolete()
            close_old_connections()
            time.sleep(0.5)
    return None


class Markers:
    """Executions from the marker files, with the last time each open one's pid was alive."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.last_alive: dict[tuple, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def runs(self) -> dict[str, list[dict]]:
        found: dict[tuple, dict] = {}
        for path in self.directory.glob("*.marker"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 5:
                    continue
                what, at, job_id, attempt, pid = parts
                key = (job_id, int(attempt), int(pid))
                found.setdefault(key, {"job": job_id, "attempt": int(attempt), "pid": int(pid)})
                found[key][what] = float(at)
        by_job = defaultdict(list)
        for key, run in found.items():
            if "end" not in run:
                run["alive_until"] = self.last_alive.get(key, run.get("start", 0.0))
            by_job[run["job"]].append(run)
        return by_job

    def _watch(self):
        while not self._stop.is_set():
            for runs in self.runs().values():
                for run in runs:
                    if "end" not in run and Path(f"/proc/{run['pid']}").exists():
                        self.last_alive[(run["job"], run["attempt"], run["pid"])] = time.time()
            time.sleep(0.1)

    def open_runs(self) -> list[dict]:
        return [
            run
            for runs in self.runs().values()
            for run in runs
            if "end" not in run and Path(f"/proc/{run['pid']}").exists()
        ]

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


class Followers:
    """One websocket client per job, on its own event loop thread; reconnects with ?after=."""

    def __init__(self, base_ws: str | list[str], secret: str):
        # Several web nodes: each reconnection goes to the next one (a node may be down).
        self.bases = [base_ws] if isinstance(base_ws, str) else list(base_ws)
        self.secret = secret
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.results: dict[str, dict] = {}
        self.futures = []

    def start(self):
        self.thread.start()

    def follow(self, job_id: str, node: int = 0):
        """Follow a job, first through web node ``node`` (an index into the bases)."""
        self.results[job_id] = {"seqs": [], "reconnects": 0, "final": None, "errors": []}
        self.results[job_id]["node"] = node
        self.futures.append(asyncio.run_coroutine_threadsafe(self._follow(job_id), self.loop))

    async def _follow(self, job_id: str, seconds: float = 600):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        result = self.results[job_id]
        deadline = time.monotonic() + seconds
        first = True
        while time.monotonic() < deadline:
            after = result["seqs"][-1] if result["seqs"] else 0
            if not first:
                result["reconnects"] += 1
            base = self.bases[(result["reconnects"] + result.get("node", 0)) % len(self.bases)]
            url = f"{base}/ws/jobs/{job_id}/?after={after}"
            first = False
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.secret}"},
                    open_timeout=10,
                ) as ws:
                    try:
                        async for raw in ws:
                            message = json.loads(raw)
                            if message["event"] == "log":
                                result["seqs"].append(message["seq"])
                            elif message.get("status") in TERMINAL:
                                result["final"] = message["status"]
                    except ConnectionClosed:
                        pass
                    code = ws.close_code
                if code == 1000 and result["final"]:
                    return
                if code is not None and code >= 4000:
                    result["errors"].append(f"closed with {code}")
                    return
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed):
                pass
            await asyncio.sleep(0.5)
        result["errors"].append("did not see the job end")

    def wait(self, seconds: float = 120):
        deadline = time.monotonic() + seconds
        for future in self.futures:
            future.result(max(1.0, deadline - time.monotonic()))
        self.futures = [f for f in self.futures if not f.done()]

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Drill:
    def __init__(self, args):
        self.args = args
        self.out: Path = args.out
        self.markers_dir = self.out / "markers"
        self.workspaces = self.out / "workspaces"
        self.counter = itertools.count(1)
        self.job_ids: list[str] = []
        self.submit_errors = 0
        self.submitting = threading.Event()
        self.phases: list[dict] = []
        self.faults: dict[str, int] = defaultdict(int)
        self.random = random.Random(9)

    # -- set-up -------------------------------------------------------------------------
    def prepare(self):
        import shutil

        for name in ("markers", "workspaces", "logs", "run"):
            shutil.rmtree(self.out / name, ignore_errors=True)
            (self.out / name).mkdir(parents=True)
        self.postgres = PrivatePostgres(self.out / "run")
        self.postgres.init()
        self.postgres.start()
        database_url = self.postgres.create_database("bh_chaos")
        self.redis = PrivateRedis(self.out / "run" / "redis" / "redis.sock")
        self.redis.start()
        env = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            **ENGINE,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url,
            "DIAGNOSTIC_MARKER_DIR": str(self.markers_dir),
            "JOB_WORKSPACE_ROOT": str(self.workspaces),
            "DJANGO_SETTINGS_MODULE": "buildhub.settings",
        }
        os.environ.update(env)
        import django

        django.setup()
        # Submissions while Redis is down log a warning with a traceback each ("the reconciler
        # will send the ticket"): expected here, and the services' own logs are kept.
        logging.getLogger("buildhub.jobs").setLevel(logging.ERROR)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from builds.choices import TokenScope
        from builds.limits import concurrency_limit
        from builds.services import create_account, create_api_token

        self.accounts = [
            create_account(f"Chaos {tier}", tier=tier) for tier in ("enterprise", "pro", "starter")
        ]
        self.caps = {account.pk: concurrency_limit(account) for account in self.accounts}
        self.secrets = {
            account.pk: create_api_token(
                account, name="chaos", scopes=[TokenScope.BUILDS_READ]
            ).secret
            for account in self.accounts
        }
        self.services = Services(env, self.out / "logs")
        self.services.start_web()
        self.services.start_supervisor(self.args.clusters)
        self.markers = Markers(self.markers_dir)
        self.markers.start()
        self.followers = {
            account.pk: Followers(f"ws://127.0.0.1:{self.services.port}", self.secrets[account.pk])
            for account in self.accounts
        }
        for followers in self.followers.values():
            followers.start()

    def teardown(self):
        self.submitting.clear()
        for followers in getattr(self, "followers", {}).values():
            followers.stop()
        if hasattr(self, "markers"):
            self.markers.stop()
        if hasattr(self, "services"):
            self.services.stop()
        if hasattr(self, "redis"):
            self.redis.stop()
        if hasattr(self, "postgres"):
            self.postgres.stop()

    # -- the job stream -----------------------------------------------------------------
    def submit_one(self):
        from builds.engine.submit import submit_job

        n = next(self.counter)
        account = self.accounts[n % len(self.accounts)]
        seconds = round(self.random.uniform(1.5, 4.0), 1)
        params = {"seconds": seconds, "steps": int(seconds * 4), "marker": f"job-{n}.marker"}
        job = submit_job(account, "diagnostic.sleep", params, staff=True)[0]
        self.job_ids.append(str(job.pk))
        self.followers[account.pk].follow(str(job.pk))

    def unfinished(self) -> int:
        from builds.models import Job

        return with_database(
            lambda: Job.objects.filter(pk__in=self.job_ids).exclude(status__in=TERMINAL).count()
        )

    def _stream(self, backlog: int):
        from django.db import DatabaseError, close_old_connections

        while self.submitting.is_set():
            try:
                close_old_connections()
                if self.unfinished() < backlog:
                    self.submit_one()
                    continue
            except DatabaseError:
                self.submit_errors += 1  # refused while PostgreSQL restarts: never submitted
            time.sleep(0.2)
        close_old_connections()

    def start_stream(self, backlog: int = 10):
        self.submitting.set()
        self.stream = threading.Thread(target=self._stream, args=(backlog,), daemon=True)
        self.stream.start()

    def stop_stream(self):
        self.submitting.clear()
        self.stream.join()

    def busy_run(self, seconds: float = 60) -> dict:
        """An execution in progress (its tool alive) of a first attempt.

        Only first attempts: a job the drill killed runs again unharmed, so no job is pushed
        past its attempt budget (three kills of one job would fail it, "worker lost").
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = [run for run in self.markers.open_runs() if run["attempt"] == 1]
            if runs:
                return self.random.choice(runs)
            time.sleep(0.1)
        raise AssertionError("no job started executing in time")

    # -- faults -------------------------------------------------------------------------
    def fault_kill(self):
        done = 0
        while done < self.args.kill_rounds:
            run = self.busy_run()
            try:
                executing = parent_pid(run["pid"])
                # The worker process running it; not an orphaned tool's new parent (init).
                if executing <= 1 or "runcluster" not in cmdline(executing):
                    continue
                os.kill(executing, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                continue  # it ended in between: pick another
            done += 1
            self.faults["kill -9 busy worker process"] += 1
            time.sleep(self.random.uniform(1.0, 2.5))

    def fault_sigterm(self):
        run = self.busy_run()
        pid = run["pid"]
        while pid > 1 and "runcluster" not in cmdline(pid):
            pid = parent_pid(pid)
        # The runcluster process whose parent is the supervisor: the worker itself.
        while "runcluster" in cmdline(parent_pid(pid)):
            pid = parent_pid(pid)
        os.kill(pid, signal.SIGTERM)
        self.faults["SIGTERM busy worker"] += 1
        time.sleep(8)

    def fault_redis(self):
        self.busy_run()
        self.redis.stop()
        self.faults[f"Redis stopped {self.args.redis_seconds:g}s"] += 1
        time.sleep(self.args.redis_seconds)
        self.redis.start()
        time.sleep(3)

    def fault_postgres(self):
        self.busy_run()
        self.postgres.restart()
        self.faults["PostgreSQL restarted"] += 1
        time.sleep(5)

    def fault_web(self):
        self.busy_run()
        self.services.stop_web()
        time.sleep(1)
        self.services.start_web()
        self.faults["web restarted"] += 1
        time.sleep(3)

    # -- checks -------------------------------------------------------------------------
    def settle(self, seconds: float = 300):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.unfinished():
            time.sleep(0.5)
        for followers in self.followers.values():
            followers.wait(max(10.0, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(self.workspaces.glob("buildhub-job-*")):
            time.sleep(0.5)

    def check(self, phase: str) -> dict:
        from builds.models import Job

        jobs = with_database(
            lambda: {
                str(job["pk"]): job
                for job in Job.objects.filter(pk__in=self.job_ids).values(
                    "pk", "status", "attempts", "account_id", "log_seq"
                )
            }
        )
        runs = self.markers.runs()
        problems = []
        lost = [
            job_id for job_id in self.job_ids if jobs.get(job_id, {}).get("status") not in TERMINAL
        ]
        for job_id, job in jobs.items():
            finished = [run for run in runs.get(job_id, []) if "end" in run]
            if job["status"] == "succeeded" and not finished:
                lost.append(job_id)  # "succeeded" without a complete execution
        overlapping, per_account = executions(
            runs, {job_id: job["account_id"] for job_id, job in jobs.items()}
        )
        caps = {}
        for account_id, spans in per_account.items():
            peak = max_concurrent(spans)
            caps[str(account_id)] = {"peak": peak, "limit": self.caps[account_id]}
            if peak > self.caps[account_id]:
                problems.append(f"account {account_id} ran {peak} > {self.caps[account_id]}")
        ws_bad, resumed, reconnects = followed_badly(
            self.followers.values(), {job_id: job["log_seq"] for job_id, job in jobs.items()}
        )
        workspaces_left = len(list(self.workspaces.glob("buildhub-job-*")))
        statuses = defaultdict(int)
        for job in jobs.values():
            statuses[job["status"]] += 1
        summary = {
            "phase": phase,
            "submitted": len(self.job_ids),
            "completed": statuses["succeeded"],
            "failed": statuses["failed"] + statuses["timed_out"] + statuses["cancelled"],
            "retried": sum(1 for job in jobs.values() if job["attempts"] > 1),
            "lost": len(lost),
            "overlapping": overlapping,
            "caps": caps,
            "caps_held": not problems,
            "ws_followers": sum(len(f.results) for f in self.followers.values()),
            "ws_resumed": resumed,  # clients that lost their connection and resumed
            "ws_reconnects": reconnects,  # connection attempts after the first, all clients
            "ws_bad": len(ws_bad),
            "workspaces_left": workspaces_left,
            "submit_refused": self.submit_errors,
            "faults": dict(self.faults),
        }
        summary["ok"] = not (lost or overlapping or problems or ws_bad or workspaces_left)
        if ws_bad:
            summary["ws_bad_sample"] = {
                job_id: next(
                    f.results[job_id] for f in self.followers.values() if job_id in f.results
                )
                | {"log_seq": jobs.get(job_id, {}).get("log_seq")}
                for job_id in ws_bad[:3]
            }
        if lost:
            summary["lost_sample"] = lost[:5]
        return summary

    # -- the run ------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        try:
            self.prepare()
            for phase in self.args.phases:
                began = time.monotonic()
                self.start_stream()
                getattr(self, f"fault_{phase}")()
                self.stop_stream()
                self.settle()
                result = self.check(phase) | {"seconds": round(time.monotonic() - began, 1)}
                self.phases.append(result)
                print(line(result), flush=True)
        finally:
            self.teardown()
        final = self.phases[-1] if self.phases else {"ok": False}
        report = {
            "args": {
                "kill_rounds": self.args.kill_rounds,
                "redis_seconds": self.args.redis_seconds,
                "clusters": self.args.clusters,
                "workers_per_cluster": int(ENGINE["BUILDHUB_WORKERS"]),
                "phases": self.args.phases,
            },
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1),
            "phases": self.phases,
            "summary": {k: v for k, v in final.items() if k != "phase"},
            "ok": all(phase["ok"] for phase in self.phases) and bool(self.phases),
        }
        name = "quick.json" if self.args.quick else "results.json"
        (self.out / name).write_text(json.dumps(report, indent=2) + "\n")
        print("CHAOS " + line(report["summary"] | {"phase": "total"}), flush=True)
        print(f"wrote {self.out / name}")
        return 0 if report["ok"] else 1


def executions(runs: dict, owner: dict) -> tuple[int, dict]:
    """Overlapping executions of one job (run twice), and each owner's execution spans.

    ``runs``: ``Markers.runs()``; ``owner``: job id to whatever the spans are grouped by.
    A killed execution lasts until its child was last seen alive.
    """
    overlapping = 0
    per_owner = defaultdict(list)
    for job_id, job_runs in runs.items():
        spans = sorted((run["start"], run.get("end", run.get("alive_until"))) for run in job_runs)
        overlapping += sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
        if job_id in owner:
            per_owner[owner[job_id]].extend(spans)
    return overlapping, per_owner


def followed_badly(all_followers, log_seqs: dict) -> tuple[list[str], int, int]:
    """Jobs whose follower missed or repeated a log line or the final status; how many
    followers resumed after losing their connection, and their reconnections in all."""
    bad, resumed, reconnects = [], 0, 0
    for followers in all_followers:
        for job_id, result in followers.results.items():
            reconnects += result["reconnects"]
            resumed += bool(result["reconnects"])
            expected = list(range(1, log_seqs[job_id] + 1)) if job_id in log_seqs else []
            if result["seqs"] != expected or result["errors"] or result["final"] is None:
                bad.append(job_id)
    return bad, resumed, reconnects


def max_concurrent(spans) -> int:
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    current = peak = 0
    for _, step in points:
        current += step
        peak = max(peak, current)
    return peak


def line(result: dict) -> str:
    return (
        f"[{result['phase']}] submitted={result['submitted']} completed={result['completed']} "
        f"failed={result['failed']} retried={result['retried']} lost={result['lost']} "
        f"overlapping={result['overlapping']} caps_held={result['caps_held']} "
        f"ws_followers={result['ws_followers']} ws_resumed={result['ws_resumed']} "
        f"ws_gaps_or_dups={result['ws_bad']} workspaces_left={result['workspaces_left']} "
        f"{'OK' if result['ok'] else 'FAILED'}"
    )


def main(argv=None) -> int:
    return Drill(parse_args(argv)).run()
