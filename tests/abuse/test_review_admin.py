"""The review queue in the Django admin: the evidence, and each action with its audit row."""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from abuse.choices import FlagStatus, PatternKind, ReviewActionKind
from abuse.models import AbuseSignal, ConfirmedPattern, Flag, ReviewAction
from builds.engine.submit import submit_job
from tests.abuse.helpers import account, bundle_hash, rescore, signal
from tests.builds.engine_helpers import BUILD_KIND

pytestmark = pytest.mark.django_db

SHARED_IP = "198.51.100.60"
SHARED_BUNDLE = bundle_hash("review queue")


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def flagged(settings):
    """Two flagged accounts: a farm member scoring 85 and a lighter one scoring 55."""
    farm = [account(f"Farm {n}") for n in range(5)]
    for n, member in enumerate(farm):
        signal(member, ip=SHARED_IP, app_name=f"Torch Light {n}", bundle=SHARED_BUNDLE)
        submit_job(member, BUILD_KIND, {"app": "torch"})  # a recent build to show
    light = account("Light")
    signal(light, ip=SHARED_IP, app_name="Torch Light")  # no bundle yet: 85 - 30
    scored = [rescore(member) for member in (farm[0], light)]
    assert [result.total for result in scored] == [85, 55]
    return farm[0], light, farm


def test_queue_lists_open_flags_by_score(admin_client, flagged, staff):
    heavy, light, _ = flagged
    dismissed = Flag.objects.create(account=account("Old"), score=99, status=FlagStatus.DISMISSED)

    page = admin_client.get(reverse("admin:abuse_flag_changelist")).content.decode()

    assert page.index(heavy.name) < page.index(light.name)
    assert dismissed.account.name not in page
    everything = admin_client.get(reverse("admin:abuse_flag_changelist") + "?queue=all")
    assert dismissed.account.name in everything.content.decode()


def test_queue_query_count_does_not_grow_with_flags(
    admin_client, flagged, django_assert_max_num_queries
):
    with django_assert_max_num_queries(10):
        admin_client.get(reverse("admin:abuse_flag_changelist"))


def test_flag_page_shows_breakdown_and_linked_accounts_with_recent_builds(
    admin_client, flagged, django_assert_max_num_queries
):
    heavy, _, farm = flagged
    flag = Flag.objects.get(account=heavy)

    with django_assert_max_num_queries(14):
        response = admin_client.get(reverse("admin:abuse_flag_change", args=[flag.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Same bundle built by several accounts" in page
    assert "+30" in page and "+15" in page
    for member in farm[1:]:
        assert member.slug in page
    assert page.count(BUILD_KIND) >= 4  # the linked accounts' recent builds
    assert "Dismiss…" in page and "Confirm pattern and block…" in page
    assert "Unblock…" not in page


def test_dismiss_needs_a_reason_and_is_recorded(admin_client, flagged, staff):
    heavy, _, _ = flagged
    flag = Flag.objects.get(account=heavy)
    url = reverse("admin:abuse_flag_dismiss", args=[flag.pk])

    assert "Dismiss the flag" in admin_client.get(url).content.decode()
    refused = admin_client.post(url, {"reason": "   "})
    assert refused.status_code == 200
    assert Flag.objects.get(pk=flag.pk).status == FlagStatus.OPEN

    done = admin_client.post(url, {"reason": "Classroom of students on one network."})

    assert done.status_code == 302
    flag.refresh_from_db()
    assert (flag.status, flag.resolved_by, flag.resolution_reason) == (
        FlagStatus.DISMISSED,
        staff,
        "Classroom of students on one network.",
    )
    action = ReviewAction.objects.get()
    assert (action.action, action.actor, action.actor_name, action.account) == (
        ReviewActionKind.DISMISS,
        staff,
        staff.username,
        heavy,
    )
    assert action.created_at is not None
    again = admin_client.post(url, {"reason": "twice"})
    assert "dismissed already" in again.content.decode()


def test_confirm_refuses_values_of_other_accounts(flagged, staff):
    from abuse.services import confirm_pattern_and_block
    from buildhub.errors import ServiceError

    heavy, _, _ = flagged
    with pytest.raises(ServiceError, match="of this account"):
        confirm_pattern_and_block(
            Flag.objects.get(account=heavy), staff, "x", [(PatternKind.IP, "192.0.2.200")]
        )
    assert not ConfirmedPattern.objects.exists()


def test_confirm_and_block_then_unblock_in_the_admin(admin_client, flagged, staff):
    heavy, _, _ = flagged
    flag = Flag.objects.get(account=heavy)
    confirm_url = reverse("admin:abuse_flag_confirm", args=[flag.pk])
    no_pattern = admin_client.post(confirm_url, {"reason": "farm"})
    assert no_pattern.status_code == 200 and not ConfirmedPattern.objects.exists()

    admin_client.post(
        confirm_url, {"patterns": [f"bundle_hash:{SHARED_BUNDLE}"], "reason": "Farm bundle."}
    )
    heavy.refresh_from_db()
    assert heavy.blocked
    assert ConfirmedPattern.objects.get().confirmed_by == staff

    page = admin_client.get(reverse("admin:abuse_flag_change", args=[flag.pk])).content.decode()
    assert "Unblock…" in page and "Dismiss…" not in page

    unblock_url = reverse("admin:abuse_flag_unblock", args=[flag.pk])
    assert "Unblock" in admin_client.get(unblock_url).content.decode()
    admin_client.post(unblock_url, {"reason": "Verified the customer by phone."})

    heavy.refresh_from_db()
    assert not heavy.blocked and heavy.blocked_reason == ""
    assert Flag.objects.get(pk=flag.pk).status == FlagStatus.UNBLOCKED
    assert list(ReviewAction.objects.order_by("created_at").values_list("action", "actor")) == [
        (ReviewActionKind.CONFIRM_AND_BLOCK, staff.pk),
        (ReviewActionKind.UNBLOCK, staff.pk),
    ]
    logged = LogEntry.objects.filter(object_id=str(flag.pk)).order_by("action_time")
    assert [entry.get_change_message() for entry in logged] == [
        f"Confirmed the pattern and blocked {heavy}.",
        f"Unblocked {heavy}.",
    ]
    # The person's later decision wins over the older pattern: submitting works again.
    job, created = submit_job(
        heavy, BUILD_KIND, {}, request_meta={"ip": SHARED_IP, "app_name": "Torch Light 0"}
    )
    assert created
    heavy.refresh_from_db()
    assert not heavy.blocked


def test_review_pages_need_the_change_permission(client, django_user_model, flagged):
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-123")
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)
    flag = Flag.objects.get(account=flagged[0])

    response = client.post(
        reverse("admin:abuse_flag_dismiss", args=[flag.pk]), {"reason": "not mine"}
    )

    assert response.status_code == 403
    assert Flag.objects.get(pk=flag.pk).status == FlagStatus.OPEN


def test_signals_are_read_only_in_the_admin(admin_client, flagged):
    signal_row = AbuseSignal.objects.first()

    assert admin_client.get(reverse("admin:abuse_abusesignal_add")).status_code == 403
    change = admin_client.post(
        reverse("admin:abuse_abusesignal_change", args=[signal_row.pk]), {"ip": "192.0.2.1"}
    )
    assert change.status_code == 403
    assert admin_client.get(reverse("admin:abuse_abusesignal_changelist")).status_code == 200
    delete = admin_client.post(
        reverse("admin:abuse_abusesignal_delete", args=[signal_row.pk]), {"post": "yes"}
    )
    assert delete.status_code == 403
    assert AbuseSignal.objects.filter(pk=signal_row.pk, ip=signal_row.ip).exists()
