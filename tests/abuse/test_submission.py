"""Signals as the engine's hooks record them: at submission and when a build completes."""

import pytest
from django.db import connection, transaction

from abuse import services
from abuse.choices import SignalKind
from abuse.models import AbuseSignal, Score
from builds.choices import JobStatus
from builds.engine.submit import submit_job
from tests.abuse.helpers import (
    FARM_IP,
    account,
    bundle_hash,
    complete_build,
    signal,
    submit_build,
)
from tests.builds.engine_helpers import BUILD_KIND

pytestmark = pytest.mark.django_db


def test_a_build_submission_records_ip_app_name_and_account_age():
    owner = account("Owner", created_days_ago=12)

    submit_build(owner, ip="2001:DB8::7", app_name="Torch Light Pro")

    recorded = AbuseSignal.objects.get()
    assert (recorded.kind, recorded.account, recorded.job) == (SignalKind.SUBMISSION, owner, None)
    assert (recorded.ip, recorded.app_name, recorded.account_age_days) == (
        "2001:db8::7",
        "Torch Light Pro",
        12,
    )
    assert (recorded.app_name_key, recorded.app_name_stem) == ("torchlightpro", "torchlightpro")
    assert Score.objects.get(account=owner).score == 0


def test_unknown_addresses_are_not_stored_and_the_app_slug_stands_in_for_a_name():
    owner = account("Owner")
    submit_job(owner, BUILD_KIND, {"app": "torch"}, request_meta={"ip": "not-an-ip"})

    recorded = AbuseSignal.objects.get()
    assert (recorded.ip, recorded.app_name) == (None, "torch")


def test_jobs_that_are_not_builds_and_idempotent_repeats_record_nothing(staff):
    owner = account("Owner")
    submit_job(owner, "diagnostic.sleep", {"seconds": 0}, staff=True, request_meta={"ip": FARM_IP})
    assert not AbuseSignal.objects.exists()

    for _ in range(2):
        submit_job(owner, BUILD_KIND, {}, idempotency_key="k1", request_meta={"ip": FARM_IP})
    assert AbuseSignal.objects.count() == 1


def test_a_completed_build_records_its_bundle_hash(django_capture_on_commit_callbacks):
    owner = account("Owner")
    job = submit_build(owner)
    digest = bundle_hash("bundle")

    complete_build(job, digest.upper(), django_capture_on_commit_callbacks)

    built = AbuseSignal.objects.get(kind=SignalKind.BUNDLE)
    assert (built.job, built.account, built.bundle_hash, built.ip) == (job, owner, digest, None)


@pytest.mark.parametrize("result", ["", "not-a-sha256", "a" * 63])
def test_builds_without_a_valid_bundle_hash_record_nothing(
    result, django_capture_on_commit_callbacks
):
    job = submit_build(account("Owner"))

    complete_build(job, result, django_capture_on_commit_callbacks)

    assert not AbuseSignal.objects.filter(kind=SignalKind.BUNDLE).exists()


def test_a_scoring_failure_does_not_fail_the_finished_build(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    job = submit_build(account("Owner"))

    def broken(account, now=None):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "score_account", broken)
    finished = complete_build(job, bundle_hash("x"), django_capture_on_commit_callbacks)

    assert finished.status == JobStatus.SUCCEEDED
    assert "could not record the bundle" in caplog.text


def test_scoring_at_submission_takes_a_bounded_number_of_queries(django_assert_max_num_queries):
    shared = bundle_hash("crowded")
    crowd = [account(f"Crowd {n}") for n in range(30)]
    for n, member in enumerate(crowd):
        signal(member, ip=FARM_IP, app_name=f"Torch Light {n}", bundle=shared)
    member = crowd[0]
    meta = {"ip": FARM_IP, "app_name": "Torch"}
    services.check_submission(member, BUILD_KIND, {}, meta)  # opens its flag

    # Record, own signals, bundle, IP, names, same day, burst, score, patterns, the flag.
    with django_assert_max_num_queries(10):
        services.check_submission(member, BUILD_KIND, {}, meta)

    assert Score.objects.get(account=member).score == 85


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL setting")
@pytest.mark.django_db(transaction=True)
def test_signals_commit_without_a_disk_sync_but_blocks_commit_durably():
    owner = account("Owner")

    def synchronous_commit():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    with services._advisory_transaction() as relax_commit:
        assert synchronous_commit() == "on"
        services.record_submission(owner, ip=FARM_IP, relax_commit=relax_commit)
        assert synchronous_commit() == "off"
        services._block(owner, "test")
        assert synchronous_commit() == "on"

    with transaction.atomic(), services._advisory_transaction() as relax_commit:
        assert relax_commit is False  # a caller's transaction is never relaxed
        services.record_submission(owner, ip=FARM_IP, relax_commit=relax_commit)
        assert synchronous_commit() == "on"
