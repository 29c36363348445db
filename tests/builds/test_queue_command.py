import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from builds.choices import WorkerState
from builds.engine.claim import claim_next_job
from builds.models import Job, Worker
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db


def run_queue(*args) -> str:
    out = io.StringIO()
    call_command("queue", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def busy_queue(pro_account, free_account):
    worker("alpha:11:1", processes=2)
    Worker.objects.create(pk="gone:12:1", host="gone", pid=12, state=WorkerState.STOPPED)
    queue_jobs(pro_account, 3)
    claim_next_job("alpha:11:1"), claim_next_job("alpha:11:1")  # pro at its limit of 2
    old = queue_jobs(free_account, 2)
    Job.objects.filter(pk=old[0].pk).update(created_at=timezone.now() - dt.timedelta(minutes=7))
    Job.objects.filter(pk=old[1].pk).update(not_before=timezone.now() + dt.timedelta(minutes=1))
    return pro_account, free_account


def test_json_overview(busy_queue):
    pro_account, free_account = busy_queue

    overview = json.loads(run_queue("--json"))

    classes = {row["class"]: row for row in overview["classes"]}
    assert list(classes) == ["P0", "P1", "P2", "P3"]
    assert classes["P0"] == {
        "class": "P0",
        "label": "P0 (Enterprise)",
        "queued": 0,
        "eligible": 0,
        "oldest_wait_seconds": None,
    }
    assert classes["P1"]["queued"] == 1
    assert classes["P3"]["queued"] == 2 and classes["P3"]["eligible"] == 1  # one in backoff
    assert 7 * 60 <= classes["P3"]["oldest_wait_seconds"] < 8 * 60
    accounts = {row["account"]: row for row in overview["accounts"]}
    assert accounts[pro_account.slug] == {
        "account": pro_account.slug,
        "tier": "pro",
        "running": 2,
        "limit": 2,
        "queued": 1,
        "blocked": False,
    }
    assert accounts[free_account.slug]["running"] == 0
    assert accounts[free_account.slug]["limit"] == 1
    assert [w["id"] for w in overview["workers"]] == ["alpha:11:1"]  # stopped ones left out
    alpha = overview["workers"][0]
    assert alpha["running_jobs"] == 2 and alpha["processes"] == 2 and alpha["live"] is True
    assert alpha["state"] == "starting" and alpha["last_seen"]
    assert overview["capacity"] == 2
    assert overview["cycle_position"] == 2 and overview["next_slot"] == "P0"


def test_text_overview(busy_queue):
    pro_account, _ = busy_queue

    text = run_queue()

    assert "P3 (Free)" in text
    assert "7m" in text  # the oldest free job's wait
    pro_line = next(line for line in text.splitlines() if line.startswith(pro_account.slug))
    assert "2/2" in pro_line.replace(" ", "")
    alpha_line = next(line for line in text.splitlines() if line.startswith("alpha:11:1"))
    assert "starting" in alpha_line and "2/2" in alpha_line.replace(" ", "")
    assert "Capacity: 2 job slot(s)" in text


def test_empty_queue_says_so():
    text = run_queue()

    assert "No account has queued or running jobs." in text
    assert "No workers registered" in text
    overview = json.loads(run_queue("--json"))
    assert all(row["queued"] == 0 for row in overview["classes"])
    assert overview["accounts"] == [] and overview["workers"] == []


def test_blocked_accounts_are_flagged():
    account = make_account("starter", "Held Co")
    queue_jobs(account, 1)
    account.blocked = True
    account.save()

    overview = json.loads(run_queue("--json"))

    assert overview["accounts"][0]["blocked"] is True
    assert overview["classes"][2]["eligible"] == 0
    assert "blocked" in run_queue()
