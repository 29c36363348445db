import datetime as dt
import threading

import pytest
from django.db import connection

from builds.models import BuildUsage
from builds.services import QuotaExhausted, consume_monthly_build, month_start, next_month_start
from tests.support.accounts import make_account


@pytest.mark.django_db
def test_consume_counts_builds_for_the_month(pro_account):
    consume_monthly_build(pro_account)
    usage = consume_monthly_build(pro_account)

    assert usage.builds_used == 2
    assert usage.builds_limit == 500
    assert usage.month.day == 1


@pytest.mark.django_db
def test_exhausted_quota_is_refused_with_when_it_resets(free_account):
    for _ in range(10):
        consume_monthly_build(free_account)

    with pytest.raises(QuotaExhausted) as refused:
        consume_monthly_build(free_account)

    error = refused.value
    assert error.status == 429
    assert "allows 10 builds a month" in error.message
    assert error.extra["resets_at"].endswith("-01T00:00:00Z")
    assert int(error.headers["Retry-After"]) > 0
    assert BuildUsage.objects.get(account=free_account).builds_used == 10


@pytest.mark.django_db
def test_enterprise_is_unlimited(enterprise_account):
    for _ in range(30):
        usage = consume_monthly_build(enterprise_account)
    assert usage.builds_used == 30
    assert usage.builds_limit is None


def test_month_boundaries():
    december = dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)
    assert month_start(december) == dt.date(2026, 12, 1)
    assert next_month_start(december) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_lose_no_count_and_never_pass_the_limit():
    account = make_account("starter")  # 100 builds a month
    BuildUsage.objects.create(
        account=account, month=month_start(dt.datetime.now(dt.UTC)), builds_used=80
    )
    results = []
    barrier = threading.Barrier(8)

    def submit():
        barrier.wait()
        try:
            for _ in range(5):
                try:
                    consume_monthly_build(account)
                    results.append("ok")
                except QuotaExhausted:
                    results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results.count("ok") == 20
    assert results.count("refused") == 20
    assert BuildUsage.objects.get(account=account).builds_used == 100
