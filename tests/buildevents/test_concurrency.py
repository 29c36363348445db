import threading
import uuid

import pytest
from django.db import connection

from buildevents.models import BuildRun, BuildRunEvent
from tests.support.build_events import EventsClient, event, started

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_same_batch_posted_at_once_by_several_senders_is_stored_once(
    pro_account, token_for, clear_cache
):
    """A sender retrying while its first request is still in flight: same runs, same ids."""
    secret = token_for(pro_account)
    runs = [uuid.uuid4() for _ in range(3)]
    batch = []
    for run in runs:
        batch.append(started(run, eventId=f"{run}-start"))
        batch.append(event(run, "stage_started", stage="Build", eventId=f"{run}-stage"))
        batch.append(event(run, "build_completed", eventId=f"{run}-end"))
    answers, barrier = [], threading.Barrier(4)

    def post():
        client = EventsClient()
        client.credentials(HTTP_X_BUILD_TOKEN=secret)
        barrier.wait()
        try:
            response = client.send(batch)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [code for code, _ in answers] == [200] * 4
    assert sum(body["accepted"] for _, body in answers) == 9
    assert sum(body["duplicates"] for _, body in answers) == 27
    assert BuildRun.objects.filter(run_id__in=runs, status="success").count() == 3
    assert BuildRunEvent.objects.count() == 9
