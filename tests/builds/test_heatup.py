import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from buildhub.errors import ServiceError
from builds.engine import workers
from builds.models import HeatUp

pytestmark = pytest.mark.django_db


def test_heatup_command_sets_a_floor_until_a_time():
    out = io.StringIO()

    call_command("heatup", "--workers", "3", "--for", "2h", stdout=out)

    heat = HeatUp.objects.get()
    assert heat.workers == 3
    assert abs((heat.until - timezone.now()) - dt.timedelta(hours=2)) < dt.timedelta(minutes=1)
    assert workers.heat_floor() == 3
    assert "at least 3 worker(s) until" in out.getvalue()


def test_the_highest_active_floor_wins_and_cool_down_ends_them():
    workers.heat_up(2, dt.timedelta(hours=1))
    workers.heat_up(5, dt.timedelta(minutes=30))
    HeatUp.objects.create(workers=9, until=timezone.now() - dt.timedelta(minutes=1))  # over

    assert workers.heat_floor() == 5
    out = io.StringIO()
    call_command("heatup", "--cool-down", stdout=out)
    assert workers.heat_floor() == 0
    assert "Ended 2 heat-up(s)" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "1 to 50 workers"),
        (["--workers", "51"], "1 to 50 workers"),
        (["--workers", "2", "--for", "3 weeks"], "is not like"),
        (["--workers", "2", "--for", "3d"], "1 minute to 24 hours"),
        ([], "Give --workers"),
    ],
)
def test_heatup_command_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("heatup", *args, stdout=io.StringIO())


def test_heat_up_service_validates():
    with pytest.raises(ServiceError):
        workers.heat_up(3, dt.timedelta(seconds=10))
