"""Dispatch tickets: sent after a job is queued unless one waits for every worker process."""

import pytest
from django.conf import settings

from builds.choices import WorkerState
from builds.engine import tickets, workers
from builds.engine.submit import submit_job
from builds.models import Worker
from tests.builds.engine_helpers import queue_jobs

pytestmark = pytest.mark.django_db(transaction=True)  # tickets go out on commit


@pytest.fixture
def empty_broker():
    tickets.ticket_broker().purge_queue()
    yield tickets.ticket_broker()
    tickets.ticket_broker().purge_queue()


def submit(account):
    return submit_job(account, "diagnostic.noop", {}, staff=True)[0]


def test_each_submission_sends_a_ticket_until_one_waits_for_every_worker_process(
    pro_account, empty_broker
):
    processes = settings.Q_CLUSTER["workers"]
    for sent in range(1, processes + 1):
        submit(pro_account)
        assert empty_broker.queue_size() == sent

    submit(pro_account)  # a waiting ticket is taken after this commit and claims the job
    submit(pro_account)

    assert empty_broker.queue_size() == processes
    assert tickets.tickets_ahead() == processes


def test_a_submission_with_the_broker_down_is_kept_for_the_reconciler(
    pro_account, empty_broker, monkeypatch
):
    def down():
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(tickets, "tickets_waiting", down)
    monkeypatch.setattr(tickets, "issue_ticket", lambda count=1: 0)

    job = submit(pro_account)

    assert job.status == "queued"  # stored; the reconciler sends its ticket later
    assert empty_broker.queue_size() == 0


def test_the_reconciler_tops_up_to_one_ticket_per_job_and_live_process(pro_account, empty_broker):
    Worker.objects.create(pk="live", host="test", pid=1, processes=3, state=WorkerState.IDLE)
    queue_jobs(pro_account, 5)
    empty_broker.purge_queue()  # as if Redis had lost the tickets of their submissions

    assert workers.reconcile_tickets() == 3  # the live worker's processes, not 5
    assert empty_broker.queue_size() == 3
    assert workers.reconcile_tickets() == 0  # enough wait already

    empty_broker.purge_queue()
    assert workers.reconcile_tickets(capacity=10) == 5  # one per eligible job at most
