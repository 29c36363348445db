"""The multi-node drill: two nodes on loopback, one killed whole (kill -9) and brought back.

``python -m tests.fleet [--quick] [--jobs N] [--down-seconds S] [--no-ota]``

Each node has its own BUILDHUB_VAR_DIR, workspace root, web process (daphne) and worker
supervisor (runworkers, one cluster of two workers); both share one PostgreSQL cluster and
one Redis (private, as the chaos drill's) and one SeaweedFS S3 server. Every request goes
through the HTTP API with account tokens, alternating between the two web nodes.

Checks (exit 1 when one fails):

- budget: an account's submit budget is one across nodes: of ``budget + 4`` submissions
  sent concurrently to both nodes, exactly ``budget`` are accepted, the rest answered 429;
- idempotency: the same Idempotency-Key sent to node A, then to node B, answers the same
  job (jobs API and builds API);
- the load: ``fleet.sleep`` jobs (a child process that writes start/end marker lines) and
  FlutterFlow builds (which store an artifact), while node A is killed whole and restarted:
  every job ends succeeded (lost 0), no two executions of a job overlapped (run twice 0),
  no account ran more jobs at once than its cap, websocket followers (reconnecting to the
  other node) saw every log line once and the final status;
- fairness: with a backlog of Enterprise jobs waiting, Pro and Starter jobs were still
  started (the claim cycle serves every class, whichever node claims);
- artifacts: each build's artifact, built on whichever node, downloads through the other web
  node (a signed S3 link) with the recorded SHA-256;
- full run: OTA builds of the fixture app (source uploaded through node A, bundle read
  through node B) and a publish of one of them.
"""

import argparse
import hashlib
import io
import itertools
import json
import logging
import os
import random
import secrets
import shutil
import tarfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.chaos.drill import (
    ENGINE,
    TERMINAL,
    Followers,
    Markers,
    executions,
    followed_badly,
    max_concurrent,
    with_database,
)
from tests.chaos.stack import ROOT, PrivatePostgres, PrivateRedis
from tests.fleet.stack import Node
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3, free_ports

FIXTURE = ROOT / "tests" / "fixtures" / "rn-app"
LOAD_TIERS = ("enterprise", "enterprise", "pro", "starter")  # the share of load each gets
EXTRA_BUDGET = 4  # submissions past the budget in the budget check


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.fleet", description=__doc__)
    parser.add_argument("--jobs", type=int, default=120, help="fleet.sleep jobs in the load")
    parser.add_argument("--builds", type=int, default=6, help="FlutterFlow builds")
    parser.add_argument("--ota", type=int, default=2, help="OTA builds (one is published)")
    parser.add_argument("--down-seconds", type=float, default=10, help="node A stays down")
    parser.add_argument("--clusters", type=int, default=1, help="clusters per node")
    parser.add_argument("--quick", action="store_true", help="CI variant: a smaller load")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "fleet")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.builds, args.ota, args.down_seconds = 30, 2, 0, 3
        args.seconds = (1.0, 2.5)
    else:
        args.seconds = (1.5, 4.0)
    args.out = args.out.resolve()
    return args


class Api:
    """JSON over HTTP to one of the web nodes, as an account's token."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        self.session = requests.Session()

    def call(self, node: Node, method, path, secret, body=None, headers=None, files=None):
        headers = {"Authorization": f"Bearer {secret}", **(headers or {})}
        answer = self.session.request(
            method,
            f"{node.url}/api/v1/{path}",
            json=body if files is None else None,
            data=body if files is not None else None,
            files=files,
            headers=headers,
            timeout=60,
            allow_redirects=False,
        )
        try:
            data = answer.json()
        except ValueError:
            data = {}
        return answer.status_code, data

    def call_any(self, first: int, method, path, secret, body=None, headers=None):
        """Through node ``first``; through the other one while it does not answer."""
        deadline = time.monotonic() + 120
        index = first
        while True:
            node = self.nodes[index % len(self.nodes)]
            try:
                status, data = self.call(node, method, path, secret, body, headers)
                if status < 500:
                    return node, status, data
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: no web node answered")
            index += 1
            time.sleep(0.3)


class FleetDrill:
    def __init__(self, args):
        self.args = args
        self.out: Path = args.out
        self.markers_dir = self.out / "markers"
        self.counter = itertools.count(1)
        self.random = random.Random(19)
        self.jobs: dict[str, dict] = {}  # job id -> {"account", "kind", "node"}
        self.builds: list[dict] = []  # {"job", "node", "kind"}
        self.results: dict = {}
        self.problems: list[str] = []
        self.submitting = threading.Event()
        self.lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------
    def budget(self) -> int:
        """The per-account submit budget: above what any one load account can submit (the
        whole load, the builds, the idempotency check's job)."""
        return self.args.jobs + self.args.builds + self.args.ota + 2

    def prepare(self):
        for name in ("markers", "run", "node-a", "node-b", "s3", "drill-var"):
            shutil.rmtree(self.out / name, ignore_errors=True)
        for name in ("markers", "run"):
            (self.out / name).mkdir(parents=True)
        self.postgres = PrivatePostgres(self.out / "run")
        self.postgres.init()
        self.postgres.start()
        database_url = self.postgres.create_database("bh_fleet")
        self.redis = PrivateRedis(self.out / "run" / "redis" / "redis.sock")
        self.redis.start()
        self.s3 = SeaweedS3(self.out / "s3", s3_port=free_ports(1)[0])
        shared = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            **ENGINE,
            "DJANGO_SETTINGS_MODULE": "tests.fleet.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url,
            # One secret for every node: sessions, signed links and tokens are checked by all.
            "SECRET_KEY": secrets.token_urlsafe(48),
            "AWS_STORAGE_BUCKET_NAME": self.s3.public_bucket,
            "AWS_PRIVATE_STORAGE_BUCKET_NAME": self.s3.private_bucket,
            "AWS_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "DIAGNOSTIC_MARKER_DIR": str(self.markers_dir),
            "BUILDHUB_WORKERS": "2",
            "JOBS_SUBMIT_RATE": f"{self.budget()}/30d",  # one window for the whole drill
            "JOBS_READ_RATE": "100000/5m",
            "API_RATE_LIMIT": "100000/m",
        }
        self.nodes = [Node(name, shared, self.out / f"node-{name}") for name in ("a", "b")]
        os.environ.update(shared | {"BUILDHUB_VAR_DIR": str(self.out / "drill-var")})
        import django

        django.setup()
        logging.getLogger("buildhub.jobs").setLevel(logging.ERROR)
        # The migrations in a thread while the S3 server starts in this one (the server stops
        # when the thread that started it ends: PR_SET_PDEATHSIG).
        failed = []
        database = threading.Thread(target=keep_error, args=(self.set_up_database, failed))
        database.start()
        self.s3.start()
        database.join()
        if failed:
            raise failed[0]
        starting = [
            threading.Thread(target=node.start, args=(self.args.clusters,)) for node in self.nodes
        ]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        if not all(node.web and node.web.poll() is None for node in self.nodes):
            raise RuntimeError("a web node did not start: see var/fleet/node-*/logs/")
        self.api = Api(self.nodes)
        self.markers = Markers(self.markers_dir)
        self.markers.start()
        self.followers = {
            label: Followers([node.ws for node in self.nodes], account["secret"])
            for label, account in self.accounts.items()
        }
        for followers in self.followers.values():
            followers.start()

    def set_up_database(self):
        """Tables, the accounts with their tokens, the app the builds are of."""
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from builds.choices import TokenScope
        from builds.limits import concurrency_limit
        from builds.services import create_account, create_api_token
        from publishing.models import App

        scopes = [TokenScope.BUILDS_READ, TokenScope.BUILDS_WRITE, TokenScope.PUBLISH]
        self.accounts = {}
        for label, tier in (
            ("enterprise", "enterprise"),
            ("pro", "pro"),
            ("starter", "starter"),
            ("budget", "pro"),
            ("builds", "pro"),
        ):
            account = create_account(f"Fleet {label}", tier=tier)
            self.accounts[label] = {
                "id": account.pk,
                "tier": tier,
                "cap": concurrency_limit(account),
                "secret": create_api_token(account, name="fleet", scopes=scopes).secret,
            }
        App.objects.create(
            account_id=self.accounts["builds"]["id"],
            slug="fleet",
            name="Fleet",
            platforms=["android", "ios"],
            runtime_version="1",
        )
        from django.db import connections

        connections.close_all()

    def teardown(self):
        self.submitting.clear()
        for followers in getattr(self, "followers", {}).values():
            followers.stop()
        if hasattr(self, "markers"):
            self.markers.stop()
        for node in getattr(self, "nodes", []):
            node.kill()  # the checks are done: no need to wait for the workers to drain
        if hasattr(self, "s3"):
            self.s3.stop(graceful=False)  # a throwaway server: a graceful stop takes 10-25 s
        for name in ("redis", "postgres"):
            if hasattr(self, name):
                getattr(self, name).stop()

    # -- submitting ---------------------------------------------------------------------
    def submit_sleep(self, label: str, node_index: int, seconds: float | None = None, key=""):
        n = next(self.counter)
        seconds = (
            seconds if seconds is not None else round(self.random.uniform(*self.args.seconds), 1)
        )
        body = {
            "kind": "fleet.sleep",
            "params": {
                "seconds": seconds,
                "steps": max(1, int(seconds * 2)),
                "marker": f"job-{n}.marker",
            },
        }
        headers = {"Idempotency-Key": key} if key else {}
        node, status, data = self.api.call_any(
            node_index, "POST", "jobs/", self.accounts[label]["secret"], body, headers
        )
        if status not in (200, 201):
            raise RuntimeError(f"submit through node {node.name}: {status} {data}")
        self.track(data["id"], label, "fleet.sleep", node)
        return node, status, data

    def submit_build(self, label: str, node_index: int, body: dict, key=""):
        headers = {"Idempotency-Key": key} if key else {}
        node, status, data = self.api.call_any(
            node_index, "POST", "builds/", self.accounts[label]["secret"], body, headers
        )
        if status not in (200, 201):
            raise RuntimeError(f"build through node {node.name}: {status} {data}")
        self.track(data["id"], label, data["kind"], node)
        return node, status, data

    def track(self, job_id: str, label: str, kind: str, node: Node):
        with self.lock:
            if job_id in self.jobs:
                return
            index = self.nodes.index(node)
            self.jobs[job_id] = {"account": label, "kind": kind, "node": node.name}
            if kind != "fleet.sleep":
                self.builds.append({"job": job_id, "node": index, "kind": kind})
        self.followers[label].follow(job_id, node=index)

    def flutterflow(self) -> dict:
        return {
            "app": "fleet",
            "target": "flutterflow",
            "platform": "android",
            "channel": "preview",
        }

    # -- the checks before the load --------------------------------------------------------
    def check_idempotency(self):
        key = str(uuid.uuid4())
        _, first_status, first = self.submit_sleep("enterprise", 0, seconds=0.5, key=key)
        _, second_status, second = self.submit_sleep("enterprise", 1, seconds=0.5, key=key)
        build_key = str(uuid.uuid4())
        _, build_first_status, build_first = self.submit_build(
            "builds", 1, self.flutterflow(), key=build_key
        )
        _, build_second_status, build_second = self.submit_build(
            "builds", 0, self.flutterflow(), key=build_key
        )
        held = (
            (first_status, second_status) == (201, 200)
            and first["id"] == second["id"]
            and (build_first_status, build_second_status) == (201, 200)
            and build_first["id"] == build_second["id"]
        )
        self.results["idempotency"] = {
            "jobs_api": [first_status, second_status, first["id"] == second["id"]],
            "builds_api": [
                build_first_status,
                build_second_status,
                build_first["id"] == build_second["id"],
            ],
            "held": held,
        }
        if not held:
            self.problems.append("an Idempotency-Key repeated on the other node made a new job")

    def check_budget(self):
        budget = self.budget()
        secret = self.accounts["budget"]["secret"]
        body = {"kind": "fleet.sleep", "params": {"seconds": 0}}

        def send(n):
            node = self.nodes[n % 2]
            return self.api.call(node, "POST", "jobs/", secret, body)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, range(budget + EXTRA_BUDGET)))
        accepted = [data["id"] for status, data in answers if status == 201]
        refused = sum(1 for status, _ in answers if status == 429)
        for job_id in accepted:
            with self.lock:
                self.jobs[job_id] = {"account": "budget", "kind": "fleet.sleep", "node": "?"}
        held = len(accepted) == budget and refused == EXTRA_BUDGET
        for job_id in accepted:  # they have done their part: the workers need not run them
            self.api.call(self.nodes[0], "POST", f"jobs/{job_id}/cancel/", secret)
        self.results["budget"] = {
            "budget": budget,
            "sent": budget + EXTRA_BUDGET,
            "accepted": len(accepted),
            "refused_429": refused,
            "held": held,
        }
        if not held:
            self.problems.append(
                f"submit budget {budget}: {len(accepted)} accepted, {refused} refused"
            )

    # -- the load and the node kill --------------------------------------------------------
    def unfinished(self) -> int:
        from builds.models import Job

        ids = list(self.jobs)
        return with_database(
            lambda: Job.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).count()
        )

    def _stream(self, backlog: int):
        from django.db import close_old_connections

        tiers = itertools.cycle(LOAD_TIERS)
        node_index = itertools.count()
        try:
            while self.submitting.is_set() and self.sleep_submitted < self.args.jobs:
                close_old_connections()
                if self.unfinished() >= backlog:
                    time.sleep(0.3)
                    continue
                self.submit_sleep(next(tiers), next(node_index))
                self.sleep_submitted += 1
        except Exception as error:  # noqa: BLE001 - a failed check, not a crash of the drill
            self.problems.append(f"the load stopped: {error}")
        finally:
            close_old_connections()

    def burst(self, count: int):
        """A backlog at once, so that classes compete: Enterprise has many jobs waiting,
        and Pro and Starter jobs arrive among them."""
        tiers = []
        for n in range(count):
            tiers.append(("pro", "starter")[n // 6 % 2] if n % 6 == 5 else "enterprise")
        for n, label in enumerate(tiers):
            self.submit_sleep(label, n)
        self.sleep_submitted += len(tiers)

    def node_busy(self, node: Node, seconds: float = 120) -> list[dict]:
        """Executions in progress on ``node`` (their child process belongs to its tree):
        as many as it has workers if that happens within half the time, else at least one."""
        deadline = time.monotonic() + seconds
        wanted = self.args.clusters * int(ENGINE["BUILDHUB_WORKERS"])
        while time.monotonic() < deadline:
            pids = node.pids()
            runs = [run for run in self.markers.open_runs() if run["pid"] in pids]
            if len(runs) >= wanted or (runs and time.monotonic() > deadline - seconds / 2):
                return runs
            time.sleep(0.2)
        raise AssertionError(f"no job started executing on node {node.name} in time")

    def kill_node(self, node: Node):
        self.node_busy(node)
        running = {run["job"] for run in self.markers.open_runs() if run["pid"] in node.pids()}
        killed_at = time.time()
        processes = node.kill()
        time.sleep(self.args.down_seconds)
        node.start(self.args.clusters)
        self.results["node_kill"] = {
            "node": node.name,
            "processes_killed": processes,
            "jobs_running_on_it": len(running),
            "down_seconds": round(time.time() - killed_at, 1),
        }
        self.killed = (killed_at, running)

    def load(self):
        self.sleep_submitted = 0
        self.burst(min(24, self.args.jobs))
        for n in range(self.args.builds // 2):
            self.submit_build("builds", n, self.flutterflow())
        self.submitting.set()
        stream = threading.Thread(target=self._stream, args=(12,), daemon=True)
        stream.start()
        self.kill_node(self.nodes[0])
        for n in range(self.args.builds - self.args.builds // 2):
            self.submit_build("builds", n, self.flutterflow())
        if self.args.ota:
            self.ota_builds()
        stream.join()
        self.submitting.clear()
        if self.sleep_submitted < self.args.jobs:
            self.problems.append(f"{self.sleep_submitted} of {self.args.jobs} jobs submitted")

    # -- OTA builds of the fixture app and a publish (full run) ------------------------------
    def ota_builds(self):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(
                FIXTURE,
                arcname="rn-app",
                filter=lambda info: None if "node_modules" in info.name else info,
            )
        secret = self.accounts["builds"]["secret"]
        status, upload = self.api.call(
            self.nodes[0],
            "POST",
            "apps/fleet/sources/",
            secret,
            files={"file": ("rn-app.tar.gz", buffer.getvalue(), "application/gzip")},
        )
        if status != 201:
            self.problems.append(f"source upload through node a: {status} {upload}")
            return
        for n in range(self.args.ota):
            body = {
                "app": "fleet",
                "target": "ota",
                "platform": ("android", "ios")[n % 2],
                "source": {"upload": upload["id"]},
            }
            self.submit_build("builds", 0, body)

    def publish_one(self) -> dict:
        """Make a version of the first OTA build and publish it through node B."""
        ota = [build for build in self.builds if build["kind"] == "build.ota"]
        if not ota:
            return {}
        secret = self.accounts["builds"]["secret"]
        _, status, version = self.api.call_any(
            1, "POST", "apps/fleet/versions/", secret, {"build": ota[0]["job"]}
        )
        if status != 201:
            self.problems.append(f"version of OTA build: {status} {version}")
            return {"published": False}
        _, status, job = self.api.call_any(
            1, "POST", f"apps/fleet/versions/{version['number']}/publish/", secret, {}
        )
        if status != 202:
            self.problems.append(f"publish: {status} {job}")
            return {"published": False}
        self.track(job["id"], "builds", "publish", self.nodes[1])
        self.settle(600)
        from builds.models import Job

        state = with_database(lambda: Job.objects.get(pk=job["id"]).status)
        if state != "succeeded":
            self.problems.append(f"publish job {job['id']} {state}")
        return {"published": state == "succeeded", "version": version["number"]}

    # -- settling and checking -----------------------------------------------------------
    def settle(self, seconds: float = 600):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.unfinished():
            time.sleep(0.5)
        for followers in self.followers.values():
            followers.wait(max(10.0, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(n.workspaces_left() for n in self.nodes):
            time.sleep(0.5)

    def check_artifacts(self) -> dict:
        """Every build's artifacts, read through the web node it was not submitted to."""
        readable, unreadable = 0, []
        for build in self.builds:
            if build["kind"] == "publish":
                continue
            other = self.nodes[1 - build["node"]]
            label = self.jobs[build["job"]]["account"]
            secret = self.accounts[label]["secret"]
            status, job = self.api.call(other, "GET", f"builds/{build['job']}/", secret)
            artifacts = job.get("artifacts", []) if status == 200 else []
            good = bool(artifacts)
            for artifact in artifacts:
                answer = None
                link = self.api.session.get(
                    f"{other.url}/api/v1/artifacts/{artifact['id']}/download/",
                    headers={"Authorization": f"Bearer {secret}"},
                    allow_redirects=False,
                    timeout=60,
                )
                if link.status_code == 302:  # a signed link to the bucket, no token sent
                    answer = requests.get(link.headers["Location"], timeout=120)
                if answer is None or answer.status_code != 200:
                    good = False
                else:
                    good = good and sha256(answer.content) == artifact["sha256"]
            if good:
                readable += 1
            else:
                unreadable.append(build["job"])
        if unreadable:
            self.problems.append(f"artifacts not readable from the other node: {unreadable[:3]}")
        return {"builds": readable + len(unreadable), "readable_from_other_node": readable}

    def check(self) -> dict:
        from builds.models import Job

        ids = list(self.jobs)
        rows = with_database(
            lambda: {
                str(row["pk"]): row
                for row in Job.objects.filter(pk__in=ids).values(
                    "pk",
                    "status",
                    "attempts",
                    "account_id",
                    "log_seq",
                    "created_at",
                    "started_at",
                    "kind",
                )
            }
        )
        runs = self.markers.runs()
        statuses = defaultdict(int)
        for row in rows.values():
            statuses[row["status"]] += 1
        lost = [job_id for job_id in ids if rows.get(job_id, {}).get("status") not in TERMINAL]
        failed = [
            job_id
            for job_id in ids
            if rows.get(job_id, {}).get("status") in TERMINAL - {"succeeded"}
            and self.jobs[job_id]["account"] != "budget"
        ]
        for job_id, job in self.jobs.items():
            if job["kind"] == "fleet.sleep" and job["account"] != "budget":
                done = [run for run in runs.get(job_id, []) if "end" in run]
                if rows.get(job_id, {}).get("status") == "succeeded" and not done:
                    lost.append(job_id)  # "succeeded" without a complete execution
        run_twice, per_account = executions(
            runs, {job_id: job["account"] for job_id, job in self.jobs.items()}
        )
        caps = {}
        for label, spans in per_account.items():
            peak, cap = max_concurrent(spans), self.accounts[label]["cap"]
            caps[label] = {"peak": peak, "cap": cap}
            if peak > cap:
                self.problems.append(f"account {label} ran {peak} jobs at once, cap {cap}")
        ws_bad, resumed, _ = followed_badly(
            self.followers.values(), {job_id: row["log_seq"] for job_id, row in rows.items()}
        )
        followed = sum(len(followers.results) for followers in self.followers.values())
        fairness = self.fairness(rows)
        recovery = self.recovery(runs)
        workspaces_left = sum(node.workspaces_left() for node in self.nodes)
        if lost:
            self.problems.append(f"lost jobs: {lost[:5]}")
        if failed:
            self.problems.append(f"failed jobs: {failed[:5]}")
        if run_twice:
            self.problems.append(f"{run_twice} overlapping executions")
        if ws_bad:
            self.problems.append(f"websocket followers that missed events: {ws_bad[:5]}")
        if workspaces_left:
            self.problems.append(f"{workspaces_left} workspaces left")
        load = [job_id for job_id, job in self.jobs.items() if job["account"] != "budget"]
        return {
            "submitted": len(load),
            "completed": sum(
                1 for job_id in load if rows.get(job_id, {}).get("status") == "succeeded"
            ),
            "failed": len(failed),
            "retried": sum(1 for row in rows.values() if row["attempts"] > 1),
            "lost": len(lost),
            "run_twice": run_twice,
            "caps": caps,
            "fairness": fairness,
            "ws_followers": followed,
            "ws_complete": followed - len(ws_bad),
            "ws_resumed": resumed,
            "workspaces_left": workspaces_left,
            "recovery": recovery,
            "jobs_by_status": dict(statuses),
        }

    def fairness(self, rows: dict) -> dict:
        """Pro and Starter jobs started while an earlier Enterprise job was still waiting."""
        by_label = defaultdict(list)
        for job_id, row in rows.items():
            label = self.jobs[job_id]["account"]
            if row["started_at"] is not None and self.jobs[job_id]["kind"] == "fleet.sleep":
                by_label[label].append(row)
        waiting_enterprise = [
            (row["created_at"], row["started_at"]) for row in by_label["enterprise"]
        ]
        served = {}
        for label in ("pro", "starter"):
            served[label] = sum(
                1
                for row in by_label[label]
                if any(
                    created < row["started_at"] < started for created, started in waiting_enterprise
                )
            )
            if not served[label]:
                self.problems.append(f"{label} was never served while Enterprise jobs waited")
        return {"served_while_enterprise_waited": served, "held": all(served.values())}

    def recovery(self, runs) -> dict:
        """From the kill to the last of the killed node's jobs running again elsewhere."""
        killed_at, running = getattr(self, "killed", (None, set()))
        if killed_at is None:
            return {}
        restarts = []
        for job_id in running:
            later = [run["start"] for run in runs.get(job_id, []) if run["start"] > killed_at]
            if later:
                restarts.append(min(later) - killed_at)
        return {
            "killed_jobs": len(running),
            "rerun": len(restarts),
            "seconds_to_rerun_all": round(max(restarts), 1) if restarts else None,
        }

    # -- the run ------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        summary: dict = {}
        timings = {}

        def timed(name, call):
            began = time.monotonic()
            result = call()
            timings[name] = round(time.monotonic() - began, 1)
            return result

        try:
            timed("start", self.prepare)
            timed("idempotency_and_budget", lambda: (self.check_idempotency(), self.check_budget()))
            timed("load_and_node_kill", self.load)
            timed("settle", self.settle)
            if self.args.ota:
                self.results["publish"] = timed("publish", self.publish_one)
            self.results["artifacts"] = timed("artifacts", self.check_artifacts)
            summary = self.check()
        finally:
            timed("stop", self.teardown)
        summary["timings"] = timings
        report = {
            "args": {
                "jobs": self.args.jobs,
                "builds": self.args.builds,
                "ota": self.args.ota,
                "down_seconds": self.args.down_seconds,
                "nodes": 2,
                "clusters_per_node": self.args.clusters,
                "workers_per_cluster": 2,
            },
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1),
            **self.results,
            **summary,
            "problems": self.problems,
            "ok": bool(summary) and not self.problems,
        }
        name = "quick.json" if self.args.quick else "results.json"
        (self.out / name).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print("FLEET " + line(report), flush=True)
        for problem in self.problems:
            print(f"  problem: {problem}")
        print(f"wrote {self.out / name}")
        return 0 if report["ok"] else 1


def keep_error(call, errors: list) -> None:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - raised again by the thread that waits
        errors.append(error)


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def line(report: dict) -> str:
    artifacts, budget = report.get("artifacts", {}), report.get("budget", {})
    return (
        f"submitted={report.get('submitted')} completed={report.get('completed')} "
        f"failed={report.get('failed')} lost={report.get('lost')} "
        f"run_twice={report.get('run_twice')} "
        f"artifacts_from_other_node={artifacts.get('readable_from_other_node')}/"
        f"{artifacts.get('builds')} "
        f"ws_complete={report.get('ws_complete')}/{report.get('ws_followers')} "
        f"budget={budget.get('accepted')}/{budget.get('budget')} "
        f"idempotency={report.get('idempotency', {}).get('held')} "
        f"fairness={report.get('fairness', {}).get('held')} "
        f"recovery_s={report.get('recovery', {}).get('seconds_to_rerun_all')} "
        f"seconds={report.get('seconds')} {'OK' if report.get('ok') else 'FAILED'}"
    )


def main(argv=None) -> int:
    return FleetDrill(parse_args(argv)).run()
