"""The operator's admin in a real browser: sign in, dashboard, heat-up, limits."""

import datetime as dt
import json
import re
import urllib.request
import uuid

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from builds.choices import JobStatus, PriorityClass
from builds.models import EnterpriseLimit, HeatUp, Job, Worker
from tests.builds.engine_helpers import queue_jobs
from tests.support.accounts import make_account
from tests.support.browser import log_in, screenshot, screenshot_both

# Sequences restart with each test, so the content types the live server cached keep their ids.
pytestmark = [pytest.mark.django_db(transaction=True, reset_sequences=True), pytest.mark.toolchain]


def held_queued(account, count):
    """Queued jobs that no worker may claim yet (not_before far ahead), so counts hold still."""
    with transaction.atomic():  # tickets go out on commit, when not_before is already set
        jobs = queue_jobs(account, count)
        Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
            not_before=timezone.now() + dt.timedelta(days=1)
        )
    return jobs


def test_login_reaches_the_dashboard(page, operator, viewport):
    log_in(page)
    expect(page.locator("#site-name")).to_have_text("BuildHub operations")
    expect(page.get_by_test_id("live-text")).to_contain_text("Live")
    screenshot(page, "dashboard", viewport)


def test_wrong_password_is_refused(page, operator):
    page.goto("/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_contain_text("Please enter the correct username")


def test_dashboard_counts_match_the_database(page, operator, viewport):
    free = make_account("free", "Free Farm")
    pro = make_account("pro", "Pro Shop")
    held_queued(free, 3)
    held_queued(pro, 2)

    log_in(page)
    for priority_class in PriorityClass.values:
        expected = Job.objects.filter(
            status=JobStatus.QUEUED, priority_class=priority_class
        ).count()
        expect(page.get_by_test_id(f"queue-depth-{priority_class}")).to_have_text(str(expected))
    expect(page.get_by_test_id("kpi-queued")).to_have_text(
        str(Job.objects.filter(status=JobStatus.QUEUED).count())
    )
    screenshot(page, "dashboard-queued", viewport)

    # A new submission shows up without a reload, over the dashboard's websocket.
    held_queued(free, 1)
    expect(page.get_by_test_id("queue-depth-P3")).to_have_text("4")
    expect(page.get_by_test_id("kpi-queued")).to_have_text("6")


@pytest.mark.parametrize("viewport", ["desktop"], indirect=True)
def test_heat_up_raises_the_worker_count(page, operator, viewport):
    log_in(page)
    expect(page.get_by_test_id("kpi-workers")).to_have_text("0", timeout=30_000)
    page.get_by_test_id("heatup-workers").fill("2")
    page.get_by_test_id("button-heatup").click()
    expect(page.locator(".messagelist")).to_contain_text("Heating up: 2 worker(s)")
    assert HeatUp.objects.get().workers == 2
    # The supervisor starts the workers; the page follows without a reload.
    expect(page.get_by_test_id("kpi-workers")).to_have_text("2", timeout=60_000)
    expect(page.get_by_test_id("supervisor-state")).to_contain_text("warm: 2 worker(s)")
    expect(page.get_by_test_id("worker-rows").locator(".ops-health.ok")).to_have_count(2)
    screenshot_both(page, "dashboard-heated")

    page.get_by_test_id("button-cooldown").click()
    expect(page.locator(".messagelist")).to_contain_text("Cooled down: 1 heat-up(s) ended.")
    assert HeatUp.objects.get().cancelled_at is not None
    expect(page.get_by_test_id("kpi-workers")).to_have_text("0", timeout=60_000)
    assert not Worker.objects.filter(state__in=["idle", "busy", "starting"]).exists()


def test_limit_editing_rejects_a_timeout_above_the_tier_max(page, operator, viewport):
    account = make_account("enterprise", "Big Corp")
    log_in(page)
    page.goto(f"/admin/builds/account/{account.pk}/change/")
    page.get_by_text(re.compile("Add another Enterprise limit", re.I)).click()
    page.fill("#id_enterprise_limit-0-max_timeout_minutes", "45")
    page.fill("#id_enterprise_limit-0-max_concurrent_builds", "8")
    page.click("input[name=_continue]")
    expect(page.locator(".errorlist")).to_contain_text(
        "capped at the Enterprise tier's maximum of 30 minutes"
    )
    screenshot(page, "account-limits-refused", viewport)
    assert not EnterpriseLimit.objects.exists()

    page.fill("#id_enterprise_limit-0-max_timeout_minutes", "25")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    assert EnterpriseLimit.objects.get(account=account).max_timeout_minutes == 25
    expect(page.get_by_text("25 min (tier max 30 min")).to_be_visible()


@pytest.mark.parametrize("viewport", ["desktop"], indirect=True)
def test_job_page_follows_a_running_job_and_cancels_it(page, operator, viewport):
    account = make_account("pro", "Live Co")
    job = queue_jobs(account, 1, params={"seconds": 60, "steps": 60})[0]
    log_in(page)
    page.goto(f"/admin/builds/job/{job.pk}/change/")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    expect(page.get_by_test_id(f"badge-status-{job.pk}")).to_have_text("Running", timeout=60_000)
    log = page.get_by_test_id(f"log-{job.pk}")
    expect(log).to_contain_text("step 2/60", timeout=30_000)
    expect(log).to_contain_text("step 4/60", timeout=30_000)
    expect(page.get_by_test_id(f"waiting-reason-{job.pk}")).to_have_text("–")
    expect(page.get_by_test_id(f"started-{job.pk}")).not_to_have_text("–")
    progress = page.get_by_test_id(f"progress-text-{job.pk}")
    expect(progress).not_to_have_text("0%")
    assert page.evaluate("window.loadedOnce") is True
    # Lines arrive once each and in order.
    seqs = [
        int(seq)
        for seq in log.locator(".log-line").evaluate_all(
            "lines => lines.map(line => line.dataset.seq)"
        )
    ]
    assert seqs == sorted(set(seqs))
    screenshot_both(page, "job-running")

    page.get_by_test_id(f"button-cancel-{job.pk}").click()
    expect(page.locator("#content")).to_contain_text("You are about to cancel for 1 job")
    page.get_by_test_id("button-confirm").click()
    expect(page.get_by_test_id(f"badge-status-{job.pk}")).to_have_text("Cancelled", timeout=30_000)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    screenshot_both(page, "job-cancelled")


def flagged_farm():
    """Five accounts sharing an IP and a bundle (score 85) and a lighter one (score 55)."""
    from tests.abuse.helpers import account, bundle_hash, rescore, signal

    shared_ip, shared_bundle = "198.51.100.60", bundle_hash("browser review")
    farm = [account(f"Farm {n}") for n in range(5)]
    for n, member in enumerate(farm):
        signal(member, ip=shared_ip, app_name=f"Torch Light {n}", bundle=shared_bundle)
    light = account("Light")
    signal(light, ip=shared_ip, app_name="Torch Light")
    assert [rescore(member).total for member in (farm[0], light)] == [85, 55]
    return farm[0], light, shared_bundle


def test_review_queue_dismiss_and_confirm(page, operator, viewport):
    from abuse.models import ConfirmedPattern, Flag

    heavy, light, bundle = flagged_farm()
    log_in(page)
    page.goto("/admin/abuse/flag/")
    rows = page.locator("#result_list tbody tr")
    expect(rows.first).to_contain_text(heavy.name)
    expect(page.locator("#result_list")).to_contain_text(light.name)
    screenshot(page, "review-queue", viewport)

    page.goto(f"/admin/abuse/flag/{Flag.objects.get(account=light).pk}/change/")
    screenshot(page, "review-flag", viewport)
    page.get_by_role("link", name="Dismiss…").click()
    page.fill("[name=reason]", "A classroom on one school network.")
    page.click("input[type=submit][value=Dismiss]")
    expect(page.locator(".messagelist")).to_contain_text(f"Dismissed the flag on {light}")
    assert Flag.objects.get(account=light).status == "dismissed"

    page.goto(f"/admin/abuse/flag/{Flag.objects.get(account=heavy).pk}/change/")
    page.get_by_role("link", name="Confirm pattern and block…").click()
    page.check(f'input[name=patterns][value="bundle_hash:{bundle}"]')
    page.fill("[name=reason]", "The same bundle from a farm of new accounts.")
    page.click("input[type=submit][value='Confirm and block']")
    expect(page.locator(".messagelist")).to_contain_text(
        f"Confirmed the pattern and blocked {heavy}"
    )
    heavy.refresh_from_db()
    assert heavy.blocked
    assert ConfirmedPattern.objects.get().value == bundle


def post_events(live_stack, secret, body):
    request = urllib.request.Request(
        f"{live_stack.url}/api/v1/internal/build-events/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Build-Token": secret},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201, 202)


@pytest.mark.parametrize("viewport", ["desktop"], indirect=True)
def test_build_banner_follows_a_build_on_every_admin_page(page, operator, live_stack, viewport):
    from builds.choices import TokenScope
    from builds.services import create_api_token

    account = make_account("pro", "Deploy Co")
    secret = create_api_token(account, name="ci", scopes=[TokenScope.EVENTS_WRITE]).secret
    run = str(uuid.uuid4())
    log_in(page)
    banner = page.get_by_test_id("build-status-banner")
    expect(banner).to_be_hidden()

    post_events(
        live_stack,
        secret,
        {
            "runId": run,
            "event": "build_started",
            "env": "prod",
            "origin": "server",
            "command": "make release",
            "host": "ci-1",
        },
    )
    post_events(
        live_stack, secret, {"runId": run, "event": "stage_started", "stage": "Backend Clean"}
    )
    # Live, without a reload: the banner appears with the stage.
    expect(banner).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("build-status-text")).to_contain_text(
        "Building: stage Backend Clean"
    )
    screenshot_both(page, "build-banner")

    page.goto("/admin/builds/job/")  # any admin page carries it
    expect(page.get_by_test_id("build-status-text")).to_contain_text("stage Backend Clean")

    post_events(live_stack, secret, {"runId": run, "event": "build_completed", "durationMs": 1234})
    expect(banner).to_be_hidden(timeout=20_000)
