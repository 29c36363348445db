"""IP retention: addresses older than ABUSE_IP_RETENTION_DAYS are removed, the rest stays."""

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from abuse.choices import PatternKind
from abuse.models import AbuseSignal, ConfirmedPattern
from abuse.services import purge_expired_ips
from builds import registry
from builds.management.commands.runworkers import Supervisor
from tests.abuse.helpers import account, bundle_hash, signal

pytestmark = pytest.mark.django_db


@pytest.fixture
def signals():
    owner = account("Owner")
    signal(owner, ip="198.51.100.80", app_name="Old", days_ago=31, bundle=bundle_hash("old"))
    signal(owner, ip="198.51.100.81", app_name="Recent", days_ago=29)
    old_pattern = ConfirmedPattern.objects.create(kind=PatternKind.IP, value="198.51.100.80")
    ConfirmedPattern.objects.filter(pk=old_pattern.pk).update(
        confirmed_at=timezone.now() - dt.timedelta(days=31)
    )
    ConfirmedPattern.objects.create(kind=PatternKind.IP, value="198.51.100.81")
    ConfirmedPattern.objects.create(kind=PatternKind.BUNDLE_HASH, value=bundle_hash("old"))
    ConfirmedPattern.objects.filter(kind=PatternKind.BUNDLE_HASH).update(
        confirmed_at=timezone.now() - dt.timedelta(days=300)
    )
    return owner


def test_purge_removes_only_expired_addresses(signals):
    result = purge_expired_ips()

    assert (result.signals, result.patterns) == (1, 1)
    old = AbuseSignal.objects.get(app_name="Old")
    assert old.ip is None and old.account == signals  # the rest of the evidence stays
    assert AbuseSignal.objects.get(app_name="Recent").ip == "198.51.100.81"
    assert AbuseSignal.objects.filter(bundle_hash=bundle_hash("old")).exists()
    assert set(ConfirmedPattern.objects.values_list("kind", "value")) == {
        (PatternKind.IP, "198.51.100.81"),
        (PatternKind.BUNDLE_HASH, bundle_hash("old")),  # hashes are not personal data
    }
    assert purge_expired_ips().signals == 0


def test_retention_is_a_setting(settings, signals):
    settings.ABUSE_IP_RETENTION_DAYS = 10

    assert purge_expired_ips().signals == 2
    assert not AbuseSignal.objects.filter(ip__isnull=False).exists()


def test_purge_command_says_what_it_did(signals):
    out = io.StringIO()
    call_command("purge_abuse_ips", stdout=out)

    assert "Removed the IP address from 1 abuse signal(s) and 1 confirmed IP pattern(s)" in (
        out.getvalue()
    )


def test_the_worker_supervisor_runs_the_purge_periodically(signals, settings):
    lines = []
    supervisor = Supervisor(clusters=0, idle_seconds=60, out=lines.append)
    [task] = [t for t in registry.periodic_tasks() if t.name == "purge abuse IPs"]
    assert task.interval_seconds == settings.ABUSE_PURGE_INTERVAL_SECONDS

    supervisor.run_periodic(now=1000.0)
    assert AbuseSignal.objects.filter(ip__isnull=False).count() == 1
    assert any("purge abuse IPs: Removed the IP address from 1" in line for line in lines)

    signal(signals, ip="198.51.100.82", app_name="Later", days_ago=40)
    supervisor.run_periodic(now=1000.0 + task.interval_seconds - 1)  # not due yet
    assert AbuseSignal.objects.filter(ip__isnull=False).count() == 2

    supervisor.run_periodic(now=1000.0 + task.interval_seconds)
    assert AbuseSignal.objects.filter(ip__isnull=False).count() == 1
