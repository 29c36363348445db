import pytest

from builds.choices import WorkerState
from builds.engine import workers
from builds.models import Worker

pytestmark = pytest.mark.django_db


def test_touch_reports_a_missing_row_so_the_worker_registers_again():
    workers.register_worker("host:1:1", "host", 1, 2)
    assert workers.touch_worker("host:1:1") is True
    assert Worker.objects.get().state == WorkerState.IDLE

    Worker.objects.all().delete()  # e.g. an operator cleaning up the table by hand
    assert workers.touch_worker("host:1:1") is False
    workers.register_worker("host:1:1", "host", 1, 2)
    assert workers.live_workers().count() == 1


def test_touch_keeps_a_draining_worker_draining_and_a_stopped_one_stopped():
    workers.register_worker("host:2:1", "host", 2, 1)
    workers.begin_drain("host:2:1", 5)
    assert workers.touch_worker("host:2:1") is True
    assert Worker.objects.get().state == WorkerState.DRAINING
    workers.mark_stopped("host:2:1")
    assert workers.touch_worker("host:2:1") is False
    assert Worker.objects.get().state == WorkerState.STOPPED
