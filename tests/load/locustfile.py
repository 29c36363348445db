"""BuildHub load scenarios: devices (the update check of each protocol: BuildHub's, Expo
Updates and CodePush; bundle download, register) and CI systems (job status polling, build
submission, build-event ingestion).

Run by ``python -m tests.load`` (``make load``), which starts the stack, seeds it and passes
the seed file in ``LOAD_SEED``. Loopback only; bounded by users, time and ``LOAD_MAX_REQUESTS``.
"""

import ipaddress
import json
import os
import random
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import gevent
from locust import HttpUser, LoadTestShape, between, events, task

from tests.load import shapes

SEED = json.loads(Path(os.environ["LOAD_SEED"]).read_text()) if os.environ.get("LOAD_SEED") else {}
MAX_REQUESTS = int(os.environ.get("LOAD_MAX_REQUESTS", "0"))
# The stack runs as in production behind a TLS proxy; the proxy's header says so.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}

# Requests are reported under these names: one row per endpoint in the summary.
UPDATE_CHECK = "update check"
EXPO_MANIFEST = "expo manifest"
CODEPUSH_CHECK = "codepush update check"
BUNDLE_DOWNLOAD = "bundle download"
DEVICE_REGISTER = "device register"
JOB_STATUS = "job status"
BUILD_SUBMIT = "build submission"
EVENT_INGEST = "build-event ingestion"

_requests_seen = 0
MANIFEST_ID = re.compile(rb'"id":"([^"]+)"')  # the manifest's own id (keys are sorted)


def is_loopback(host: str) -> bool:
    name = urlsplit(host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@events.test_start.add_listener
def refuse_remote_hosts(environment, **kwargs):
    if not is_loopback(environment.host or ""):
        raise SystemExit(f"load runs against loopback only, not {environment.host!r}")


@events.request.add_listener
def stop_at_request_budget(**kwargs):
    """The request cap of a profile: the run ends once it is spent, whatever the time."""
    global _requests_seen
    _requests_seen += 1
    runner = getattr(stop_at_request_budget, "runner", None)
    if MAX_REQUESTS and _requests_seen >= MAX_REQUESTS and runner is not None:
        stop_at_request_budget.runner = None
        gevent.spawn(runner.quit)  # not from this user's greenlet, which quit() stops


@events.init.add_listener
def keep_runner(environment, **kwargs):
    stop_at_request_budget.runner = environment.runner


class DeviceUser(HttpUser):
    """A phone running the app: checks for updates often (BuildHub's check, and as an
    expo-updates or react-native-code-push client would), downloads and registers rarely."""

    weight = 8
    wait_time = between(0.5, 1.5)

    def on_start(self):
        app = SEED["app"]
        self.device_id = f"device-{uuid.uuid4().hex[:16]}"
        self.platform = random.choice(sorted(SEED["bundles"]))
        self.headers = {**PROXY_HEADERS, "X-App-Key": app["app_key"]}
        self.query = {
            "app": app["slug"],
            "platform": self.platform,
            "runtime_version": app["runtime_version"],
            "channel": "production",
            "device": self.device_id,
        }
        self.installed = ""
        self.expo_headers = {
            **PROXY_HEADERS,
            "expo-protocol-version": "1",
            "expo-platform": self.platform,
            "expo-runtime-version": app["runtime_version"],
            "expo-channel-name": "production",
            "eas-client-id": self.device_id,
            "accept": "multipart/mixed,application/expo+json,application/json",
        }
        self.expo_installed = ""
        self.codepush_query = {
            "deployment_key": SEED["codepush"][self.platform],
            "app_version": "1.0.0",
            "client_unique_id": self.device_id,
        }
        self.codepush_installed = {}

    @task(10)
    def update_check(self):
        query = {**self.query, "current": self.installed} if self.installed else self.query
        with self.client.get(
            "/api/v1/updates/check",
            params=query,
            headers=self.headers,
            name=UPDATE_CHECK,
            catch_response=True,
        ) as response:
            if response.status_code == 200 or (response.status_code == 204 and self.installed):
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(5)
    def expo_manifest(self):
        headers = {**self.expo_headers}
        if self.expo_installed:
            headers["expo-current-update-id"] = self.expo_installed
        with self.client.get(
            f"/api/v1/expo/{SEED['app']['app_key']}/manifest",
            headers=headers,
            name=EXPO_MANIFEST,
            catch_response=True,
        ) as response:
            found = MANIFEST_ID.search(response.content or b"")
            if response.status_code == 200 and found:
                response.success()
                self.expo_installed = found.group(1).decode()  # the next checks answer 204
            elif response.status_code == 204 and self.expo_installed:
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(5)
    def codepush_check(self):
        with self.client.get(
            "/v0.1/public/codepush/update_check",
            params={**self.codepush_query, **self.codepush_installed},
            headers=PROXY_HEADERS,
            name=CODEPUSH_CHECK,
            catch_response=True,
        ) as response:
            info = response.json().get("update_info") if response.status_code == 200 else None
            if info and info.get("is_available") and info.get("package_hash"):
                response.success()
                self.codepush_installed = {
                    "package_hash": info["package_hash"],
                    "label": info["label"],
                }  # the next checks answer no update
            elif info and not info.get("is_available") and self.codepush_installed:
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(1)
    def bundle_download(self):
        bundle = SEED["bundles"][self.platform]
        with self.client.get(
            f"/api/v1/bundles/{bundle['artifact']}/",
            headers=PROXY_HEADERS,
            name=BUNDLE_DOWNLOAD,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif response.headers.get("ETag") != f'"{bundle["sha256"]}"':
                response.failure("bundle ETag does not match its sha256")
            else:
                self.installed = bundle["sha256"]  # the next checks answer 204

    @task(2)
    def device_register(self):
        self.client.post(
            "/api/v1/devices/register",
            json={
                "device_id": self.device_id,
                "platform": self.platform,
                "runtime_version": SEED["app"]["runtime_version"],
            },
            headers=self.headers,
            name=DEVICE_REGISTER,
        )


class CiUser(HttpUser):
    """A CI system: polls its jobs, posts build lifecycle events, submits now and then."""

    weight = 2
    wait_time = between(0.5, 1.5)

    def on_start(self):
        self.tier = random.choice(sorted(SEED["tokens"]))
        self.token_headers = {
            **PROXY_HEADERS,
            "Authorization": f"Bearer {SEED['tokens'][self.tier]}",
        }
        staff = SEED["staff"]
        self.staff_headers = {
            **PROXY_HEADERS,
            "Cookie": f"sessionid={staff['sessionid']}; csrftoken={staff['csrftoken']}",
            "X-CSRFToken": staff["csrftoken"],
            "Origin": "https://" + urlsplit(self.host).netloc,
        }
        self.run_id = str(uuid.uuid4())
        self.run_events = 0

    @task(5)
    def job_status(self):
        job_id = random.choice(SEED["jobs"][self.tier])
        self.client.get(f"/api/v1/jobs/{job_id}/", headers=self.token_headers, name=JOB_STATUS)

    @task(3)
    def build_event(self):
        if self.run_events == 0:
            event = {"event": "build_started", "command": "make release", "env": "prod"}
        elif self.run_events >= 6:
            event = {"event": "build_completed", "payload": {"exitCode": 0}}
        elif self.run_events % 2:
            event = {"event": "stage_started", "stage": f"stage {self.run_events}"}
        else:
            event = {"event": "heartbeat"}
        event.update(runId=self.run_id, eventId=f"{self.run_events}")
        self.client.post(
            "/api/v1/internal/build-events/",
            json=event,
            headers={**PROXY_HEADERS, "X-Build-Token": SEED["tokens"][self.tier]},
            name=EVENT_INGEST,
        )
        self.run_events += 1
        if event["event"] == "build_completed":
            self.run_id, self.run_events = str(uuid.uuid4()), 0

    @task(1)
    def build_submission(self):
        self.client.post(
            "/api/v1/jobs/",
            json={"kind": "diagnostic.noop", "account": SEED["submit_account"]},
            headers=self.staff_headers,
            name=BUILD_SUBMIT,
        )


if os.environ.get("LOAD_SHAPE"):
    # Only the chosen profile's shape is visible to Locust; without one, -u/-r/-t apply.
    class ProfileShape(shapes.SHAPES[os.environ["LOAD_SHAPE"]], LoadTestShape):
        pass
