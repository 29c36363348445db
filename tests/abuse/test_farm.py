"""The farm: five throwaway accounts, one IP, one bundle; a reviewer confirms; then blocks."""

import pytest
from django.urls import reverse

from abuse.choices import FlagPriority, FlagStatus, PatternKind, ReviewActionKind
from abuse.models import ConfirmedPattern, Flag, ReviewAction
from builds.choices import JobStatus, TokenScope
from builds.engine.submit import BLOCKED_MESSAGE, AccountBlocked
from builds.models import Job
from publishing.choices import VersionStatus
from publishing.models import App, Version
from tests.abuse.helpers import FARM_IP, account, bundle_hash, complete_build, submit_build

pytestmark = pytest.mark.django_db

FARM_BUNDLE = bundle_hash("free minutes farm")


@pytest.fixture
def farm(django_capture_on_commit_callbacks):
    members = [account(f"Torch {n}") for n in range(1, 6)]
    for n, member in enumerate(members, start=1):
        job = submit_build(member, app_name=f"Torch Light {n}")
        complete_build(job, FARM_BUNDLE, django_capture_on_commit_callbacks)
    return members


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def confirm_in_admin(admin_client, flag):
    url = reverse("admin:abuse_flag_confirm", args=[flag.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert FARM_BUNDLE in page.content.decode()
    response = admin_client.post(
        url,
        {
            "patterns": [f"{PatternKind.IP}:{FARM_IP}", f"{PatternKind.BUNDLE_HASH}:{FARM_BUNDLE}"],
            "reason": "Five same-day accounts rebuilding one bundle from one address.",
        },
    )
    assert response.status_code == 302
    return response


def test_five_accounts_one_ip_one_bundle_are_flagged_not_blocked(farm):
    flags = Flag.objects.order_by("account_id")

    assert [flag.account for flag in flags] == farm
    assert {(f.status, f.priority, f.score) for f in flags} == {
        (FlagStatus.OPEN, FlagPriority.HIGH, 85)
    }
    assert not any(member.blocked for member in farm)
    rules = {rule["rule"]: rule["accounts"] for rule in flags[0].current_breakdown["rules"]}
    assert rules["shared_bundle"] == sorted(member.pk for member in farm[1:])


def test_after_confirmation_a_farm_member_is_blocked_at_submission(farm, admin_client, staff):
    confirm_in_admin(admin_client, Flag.objects.get(account=farm[0]))

    farm[0].refresh_from_db()
    assert farm[0].blocked
    confirmation = ReviewAction.objects.get(action=ReviewActionKind.CONFIRM_AND_BLOCK)
    assert (confirmation.actor, confirmation.account) == (staff, farm[0])
    assert confirmation.reason.startswith("Five same-day accounts")
    assert set(confirmation.patterns.values_list("kind", flat=True)) == {"ip", "bundle_hash"}
    # The others wait for their next scoring; nobody else was blocked by the click.
    assert [m.pk for m in farm if m.__class__.objects.get(pk=m.pk).blocked] == [farm[0].pk]

    jobs_before = Job.objects.count()
    with pytest.raises(AccountBlocked) as refused:
        submit_build(farm[1], app_name="Torch Light 2")

    assert (refused.value.status, refused.value.message) == (403, BLOCKED_MESSAGE)
    assert Job.objects.count() == jobs_before
    farm[1].refresh_from_db()
    assert farm[1].blocked
    auto = ReviewAction.objects.get(account=farm[1])
    assert (auto.action, auto.actor_name, auto.score) == (ReviewActionKind.AUTO_BLOCK, "system", 85)
    assert Flag.objects.get(account=farm[1]).status == FlagStatus.BLOCKED


def test_a_sixth_account_is_blocked_once_it_matches_and_refused_with_a_neutral_403(
    farm, staff, api_client_for, django_capture_on_commit_callbacks
):
    from abuse.services import confirm_pattern_and_block

    confirm_pattern_and_block(
        Flag.objects.get(account=farm[0]),
        staff,
        "Confirmed farm.",
        [(PatternKind.IP, FARM_IP), (PatternKind.BUNDLE_HASH, FARM_BUNDLE)],
    )
    sixth = account("Torch 6")

    # Its first build carries no bundle yet: 55 points, in the queue for review, not blocked.
    first = submit_build(sixth, app_name="Torch Light 6")
    assert Flag.objects.get(account=sixth).score == 55
    queued = submit_build(sixth, app_name="Torch Light 6")

    complete_build(first, FARM_BUNDLE, django_capture_on_commit_callbacks)

    sixth.refresh_from_db()
    assert sixth.blocked
    assert ReviewAction.objects.get(account=sixth).action == ReviewActionKind.AUTO_BLOCK
    with pytest.raises(AccountBlocked):
        submit_build(sixth, app_name="Torch Light 6")
    assert Job.objects.get(pk=queued.pk).status == JobStatus.QUEUED  # waits, not cancelled

    # Through the HTTP API the refusal says nothing about why.
    app = App.objects.create(account=sixth, slug="torch", name="Torch Light 6")
    Version.objects.create(app=app, number=1, status=VersionStatus.READY, runtime_version="1.0")
    client = api_client_for(sixth, scopes=[TokenScope.PUBLISH])
    response = client.post(
        "/api/v1/apps/torch/versions/1/publish/",
        {"target_environment": "production"},
        format="json",
        REMOTE_ADDR=FARM_IP,
    )

    assert response.status_code == 403
    assert response.json() == {"error": {"code": "account_blocked", "message": BLOCKED_MESSAGE}}
    body = response.content.decode().lower()
    assert not any(word in body for word in ("abuse", "score", "pattern", "ip", "bundle"))
    assert ConfirmedPattern.objects.count() == 2
