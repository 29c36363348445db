import datetime as dt
import http.server
import json
import threading

import pytest
from django.utils import timezone
from django_q.models import Schedule

from buildevents import notifications, webhooks
from buildevents.choices import DeliveryStatus
from buildevents.models import BuildRun, Notification, WebhookDelivery, WebhookEndpoint
from buildevents.services import sweep_stale_runs
from tests.support.build_events import at, event, started

pytestmark = pytest.mark.django_db


@pytest.fixture
def operators(staff, django_user_model):
    """Two staff users (one without an e-mail address) and a customer who must hear nothing."""
    quiet = django_user_model.objects.create_user("quiet", "", "pw-quiet-123", is_staff=True)
    customer = django_user_model.objects.create_user("customer", "c@example.com", "pw-c-12345")
    return staff, quiet, customer


def due_now():
    return timezone.now() - dt.timedelta(seconds=1)


def kinds_for(user):
    return list(
        Notification.objects.filter(user=user).order_by("id").values_list("kind", flat=True)
    )


def test_start_and_end_notify_staff_but_stages_and_heartbeats_do_not(
    events_client, run_id, operators, django_capture_on_commit_callbacks, mailoutbox, q_sync
):
    staff, quiet, customer = operators

    with django_capture_on_commit_callbacks(execute=True):
        events_client.send(started(run_id, ts=at(0)))
        events_client.send(
            [
                event(run_id, "stage_started", stage="Build", ts=at(1)),
                event(run_id, "heartbeat", ts=at(2)),
                event(run_id, "stage_completed", stage="Build", ts=at(3)),
            ]
        )
        events_client.send(event(run_id, "build_completed", durationMs=151000, ts=at(151)))

    assert kinds_for(staff) == ["build_started", "build_completed"]
    assert kinds_for(quiet) == ["build_started", "build_completed"]
    assert kinds_for(customer) == []
    titles = list(Notification.objects.filter(user=staff).values_list("title", flat=True))
    assert "Build completed: npm run build:deploy in 2m31s" in titles
    # Mail goes to staff who have an address, once per notice.
    assert [message.to for message in mailoutbox] == [[staff.email], [staff.email]]
    assert mailoutbox[0].subject == "Build started: npm run build:deploy"
    assert Notification.objects.filter(user=staff, emailed_at__isnull=True).count() == 0


def test_failure_notifies_with_the_exit_code(events_client, run_id, operators):
    staff = operators[0]
    events_client.send(started(run_id, ts=at(0)))

    events_client.send(event(run_id, "build_failed", ts=at(42), payload={"exitCode": 2}))

    notice = Notification.objects.filter(user=staff).first()
    assert notice.kind == "build_failed"
    assert notice.title == "Build failed: npm run build:deploy after 42s, exit code 2"


def test_duplicates_and_late_events_do_not_notify_again(events_client, run_id, operators):
    staff = operators[0]
    start = started(run_id, eventId="s")
    events_client.send(start)
    events_client.send(start)
    events_client.send(started(run_id))  # a second start without an id: the run has started
    events_client.send(event(run_id, "build_completed", eventId="c"))
    events_client.send(event(run_id, "build_completed", eventId="c2"))
    events_client.send(event(run_id, "build_failed"))

    assert kinds_for(staff) == ["build_started", "build_completed"]


def test_a_stale_run_notifies_once(events_client, run_id, operators):
    staff = operators[0]
    events_client.send(started(run_id))
    BuildRun.objects.filter(run_id=run_id).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(minutes=5)
    )

    sweep_stale_runs(timeout=90)
    sweep_stale_runs(timeout=90)

    assert kinds_for(staff) == ["build_started", "stale"]
    assert Notification.objects.filter(user=staff, kind="stale").get().title == (
        "Build stale: npm run build:deploy: no heartbeat for 90s"
    )


def test_unread_count_and_mark_read(events_client, run_id, operators):
    staff, _, customer = operators
    events_client.send([started(run_id), event(run_id, "build_completed")])

    assert notifications.unread_count(staff) == 2
    assert notifications.unread_count(customer) == 0
    assert notifications.mark_read(staff) == 2
    assert notifications.unread_count(staff) == 0


# --- webhooks ---------------------------------------------------------------------------
class Receiver:
    """A real HTTP endpoint on a free loopback port that answers with the given codes."""

    def __init__(self, codes):
        self.codes = list(codes)
        self.requests = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.headers, body))  # case-insensitive
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*codes):
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_webhooks_are_signed_and_verifiable(
    events_client, run_id, receiver, django_capture_on_commit_callbacks, q_sync
):
    hook = receiver(200)
    endpoint = WebhookEndpoint.objects.create(url=hook.url, secret="s3cret")

    with django_capture_on_commit_callbacks(execute=True):
        events_client.send(started(run_id))

    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    assert headers["X-BuildHub-Event"] == "build_started"
    payload = json.loads(body)
    assert payload["kind"] == "build_started"
    assert payload["run"]["runId"] == str(run_id)
    timestamp, signature = headers["X-BuildHub-Timestamp"], headers["X-BuildHub-Signature"]
    assert webhooks.verify_signature(endpoint.secret, body, timestamp, signature)
    # What a receiver must refuse: another secret, a changed body, an old or odd timestamp.
    assert not webhooks.verify_signature("other", body, timestamp, signature)
    assert not webhooks.verify_signature(endpoint.secret, body + b" ", timestamp, signature)
    assert not webhooks.verify_signature(
        endpoint.secret, body, timestamp, signature, now=int(timestamp) + 301
    )
    assert not webhooks.verify_signature(endpoint.secret, body, "yesterday", signature)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()

    assert webhooks.sign("key", 1700000000, b"{}") == f"sha256={expected}"


def test_endpoints_get_only_the_kinds_they_ask_for(events_client, run_id, receiver):
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/a", kinds=["build_failed"])
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/b", active=False)

    events_client.send([started(run_id), event(run_id, "build_failed")])

    assert list(WebhookDelivery.objects.values_list("kind", "endpoint__url")) == [
        ("build_failed", "http://127.0.0.1:9/a")
    ]


def test_a_failed_delivery_is_retried_with_backoff_until_it_lands(
    events_client, run_id, receiver, settings
):
    settings.BUILD_WEBHOOK_RETRY_BASE_SECONDS = 30
    hook = receiver(500, 503, 200)
    WebhookEndpoint.objects.create(url=hook.url)
    events_client.send(started(run_id))
    delivery = WebhookDelivery.objects.get()

    before = timezone.now()
    assert notifications.deliver_webhook(delivery.pk) == DeliveryStatus.PENDING
    after = timezone.now()
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (1, 500)
    # 30 s plus up to 20% jitter after the attempt
    assert before + dt.timedelta(seconds=30) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= after + dt.timedelta(seconds=36)
    retry = Schedule.objects.get(func="buildevents.tasks.deliver_webhook")
    assert retry.schedule_type == Schedule.ONCE
    assert retry.args == f"({delivery.pk},)"
    # Not due yet: a second attempt now does nothing.
    assert notifications.deliver_webhook(delivery.pk) == DeliveryStatus.PENDING
    assert len(hook.requests) == 1

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=due_now())
    before = timezone.now()
    notifications.deliver_webhook(delivery.pk)
    after = timezone.now()
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert before + dt.timedelta(seconds=60) <= delivery.next_attempt_at  # doubled
    assert delivery.next_attempt_at <= after + dt.timedelta(seconds=72)

    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=due_now())
    assert notifications.deliver_webhook(delivery.pk) == DeliveryStatus.DELIVERED
    assert len(hook.requests) == 3


def test_a_delivery_gives_up_after_its_attempts(events_client, run_id, settings):
    settings.BUILD_WEBHOOK_MAX_ATTEMPTS = 2
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/closed")  # nothing listens there
    events_client.send(started(run_id))
    delivery = WebhookDelivery.objects.get()

    notifications.deliver_webhook(delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=due_now())
    assert notifications.deliver_webhook(delivery.pk) == DeliveryStatus.FAILED

    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.last_status_code is None
    assert "refused" in delivery.last_error.lower()


def test_the_sweep_sends_what_the_queue_left_behind(
    events_client, run_id, operators, receiver, mailoutbox
):
    """No worker took the tasks (scaled to zero, broker down): the supervisor's sweep does."""
    hook = receiver(200)
    WebhookEndpoint.objects.create(url=hook.url)
    events_client.send(started(run_id))  # on-commit tasks never run in this test

    assert notifications.flush_overdue() == (0, 0)  # not overdue yet
    later = timezone.now() + dt.timedelta(minutes=2)
    assert notifications.flush_overdue(now=later) == (1, 1)

    assert len(mailoutbox) == 1
    assert len(hook.requests) == 1
    assert notifications.flush_overdue(now=later) == (0, 0)


def test_the_retry_delay_doubles():
    first = notifications.retry_delay(1).total_seconds()
    third = notifications.retry_delay(3).total_seconds()

    assert 30 <= first <= 36
    assert 120 <= third <= 144
