"""A real Prometheus (Debian's) scrapes a running stack (daphne and the worker supervisor, as
`make run` starts them) while jobs run, and its query API answers with BuildHub's series."""

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from django.conf import settings

from builds.choices import JobStatus
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs
from tests.support.accounts import make_account
from tests.support.live import running_stack
from tests.support.net import free_port

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-token-for-the-live-test"
PATIENCE = 120  # a limit on a hung stack, not a timing


def wait_for(what: str, predicate, seconds: float = PATIENCE):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def live_stack(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with running_stack(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),  # this stack's processes only
        METRICS_TOKEN=TOKEN,
        METRICS_ALLOWED_NETWORKS="",
    ) as stack:
        yield stack


@pytest.fixture
def prometheus(live_stack, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make observability` installs it (Debian package)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(settings.BASE_DIR / "deploy" / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "buildhub",
                        "authorization": {"credentials": TOKEN},
                        "static_configs": [{"targets": [f"127.0.0.1:{live_stack.port}"]}],
                    }
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if process.poll() is not None:
            raise AssertionError((tmp_path / "prometheus.log").read_text())
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for("Prometheus to be ready", ready, seconds=60)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(url: str, expression: str) -> list[dict]:
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(address, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def total(url: str, expression: str) -> float:
    return sum(float(series["value"][1]) for series in query(url, expression))


def test_prometheus_scrapes_a_running_stack_while_jobs_run(live_stack, prometheus):
    account = make_account("enterprise", "Scraped Co")
    jobs = queue_jobs(account, 3, params={"seconds": 1})

    wait_for(
        "the jobs to succeed",
        lambda: (
            Job.objects.filter(pk__in=[job.pk for job in jobs], status=JobStatus.SUCCEEDED).count()
            == 3
        ),
    )

    assert wait_for("the target to be up", lambda: total(prometheus, 'up{job="buildhub"}') == 1)
    finished = 'buildhub_jobs_finished_total{kind="diagnostic.sleep",outcome="succeeded"}'
    wait_for("the finished jobs to be scraped", lambda: total(prometheus, finished) >= 3)
    claimed = query(prometheus, 'buildhub_jobs_claimed_total{kind="diagnostic.sleep"}')
    assert {series["metric"]["tier"] for series in claimed} == {"enterprise"}
    assert total(prometheus, "buildhub_job_run_seconds_count") >= 3
    assert {series["metric"]["class"] for series in query(prometheus, "buildhub_queue_jobs")} == {
        "P0",
        "P1",
        "P2",
        "P3",
    }
    assert query(prometheus, "buildhub_workers")
    healthz = 'buildhub_http_requests_total{route="healthz",status="200"}'
    assert total(prometheus, healthz) >= 1

    # The rules load and are evaluated against the live series.
    def rules():
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
            groups = json.load(response)["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    evaluated = wait_for(
        "the rules to be evaluated",
        lambda: (found := rules()) and all(rule["health"] == "ok" for rule in found) and found,
    )
    assert {rule["name"] for rule in evaluated} >= {
        "BuildHubNoLiveWorker",
        "BuildHubQueueWaitAboveTierExpectation",
    }
