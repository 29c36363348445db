import pytest

from buildhub.errors import ServiceError
from builds.choices import JobStatus, PriorityClass
from builds.engine.submit import AccountBlocked, submit_job
from builds.models import BuildUsage, Job
from builds.services import QuotaExhausted
from tests.builds.engine_helpers import BUILD_KIND

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fixture", "priority_class", "timeout"),
    [
        ("free_account", PriorityClass.P3, 300),
        ("starter_account", PriorityClass.P2, 600),
        ("pro_account", PriorityClass.P1, 900),
        ("enterprise_account", PriorityClass.P0, 1800),
    ],
)
def test_job_takes_class_and_timeout_from_the_tier(request, fixture, priority_class, timeout):
    account = request.getfixturevalue(fixture)

    job, created = submit_job(account, BUILD_KIND, {"ref": "main"})

    assert created
    assert job.status == JobStatus.QUEUED
    assert job.priority_class == priority_class
    assert job.timeout_seconds == timeout
    assert job.params == {"ref": "main"}
    assert job.max_attempts == 3
    assert BuildUsage.objects.get(account=account).builds_used == 1


def test_shorter_timeout_is_kept_and_longer_refused_naming_the_limit(pro_account):
    job, _ = submit_job(pro_account, BUILD_KIND, timeout_minutes=3)
    assert job.timeout_seconds == 180

    with pytest.raises(ServiceError) as refused:
        submit_job(pro_account, BUILD_KIND, timeout_minutes=26)

    assert refused.value.status == 400
    assert "limit of 15 minutes" in refused.value.message
    assert refused.value.fields == {"timeout_minutes": "at most 15"}
    assert Job.objects.count() == 1
    assert BuildUsage.objects.get(account=pro_account).builds_used == 1


@pytest.mark.parametrize("bad", [0, -5, "10", 2.5, True])
def test_malformed_timeouts_are_refused(pro_account, bad):
    with pytest.raises(ServiceError) as refused:
        submit_job(pro_account, BUILD_KIND, timeout_minutes=bad)
    assert refused.value.status == 400
    assert "timeout_minutes" in refused.value.fields


def test_exhausted_quota_is_429_and_creates_nothing(free_account):
    for _ in range(10):
        submit_job(free_account, BUILD_KIND)

    with pytest.raises(QuotaExhausted) as refused:
        submit_job(free_account, BUILD_KIND)

    assert refused.value.status == 429
    assert "resets at" in refused.value.message
    assert Job.objects.filter(account=free_account).count() == 10


def test_enterprise_is_never_out_of_quota(enterprise_account):
    for _ in range(15):
        submit_job(enterprise_account, BUILD_KIND)
    assert Job.objects.filter(account=enterprise_account).count() == 15


def test_blocked_account_is_refused_without_revealing_why(pro_account):
    pro_account.blocked = True
    pro_account.blocked_reason = "same bundle hash as 4 other accounts"
    pro_account.save()

    with pytest.raises(AccountBlocked) as refused:
        submit_job(pro_account, BUILD_KIND)

    assert refused.value.status == 403
    assert "bundle" not in refused.value.message
    assert not Job.objects.exists()


def test_same_idempotency_key_returns_the_first_job(pro_account, free_account):
    first, created = submit_job(pro_account, BUILD_KIND, idempotency_key="ci-run-77")
    again, created_again = submit_job(pro_account, BUILD_KIND, idempotency_key="ci-run-77")
    other, created_other = submit_job(free_account, BUILD_KIND, idempotency_key="ci-run-77")

    assert created and not created_again and created_other
    assert again.pk == first.pk
    assert other.pk != first.pk
    assert BuildUsage.objects.get(account=pro_account).builds_used == 1


def test_unknown_and_staff_only_kinds(pro_account):
    with pytest.raises(ServiceError) as unknown:
        submit_job(pro_account, "no.such.kind")
    assert unknown.value.status == 400

    with pytest.raises(ServiceError) as staff_only:
        submit_job(pro_account, "diagnostic.sleep", {"seconds": 1})
    assert staff_only.value.status == 403

    job, _ = submit_job(pro_account, "diagnostic.sleep", {"seconds": 1}, staff=True)
    assert job.status == JobStatus.QUEUED
    assert not BuildUsage.objects.filter(account=pro_account).exists()  # not a build


def test_submission_checks_from_other_apps_can_refuse(pro_account, monkeypatch):
    from builds import registry

    seen = []

    def check(account, kind, params, request_meta):
        seen.append((account.slug, kind, request_meta.get("ip")))
        raise ServiceError("refused by a check", status=403, code="refused")

    monkeypatch.setattr(registry, "_submission_checks", [check])

    with pytest.raises(ServiceError, match="refused by a check"):
        submit_job(pro_account, BUILD_KIND, request_meta={"ip": "203.0.113.9"})

    assert seen == [(pro_account.slug, BUILD_KIND, "203.0.113.9")]
    assert not Job.objects.exists()
