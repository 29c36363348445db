"""Telling staff about runs: in-app notifications, e-mail and signed outgoing webhooks.

Only the start and end of a run and a lost heartbeat are worth a notice. Rows are written in
the transaction that changed the run; e-mail and webhooks are django-q2 tasks sent after
commit, and the periodic sweep picks up whatever a missing worker or broker left behind.
"""

import datetime as dt
import json
import logging
import random
import urllib.error
import urllib.request

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Now
from django.utils import timezone

from buildevents import webhooks
from buildevents.choices import DeliveryStatus, NotificationKind
from buildevents.models import BuildRun, Notification, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger("buildhub.buildevents")

EMAIL_TASK = "buildevents.tasks.send_notification_emails"
WEBHOOK_TASK = "buildevents.tasks.deliver_webhook"
# Work the queue should have done by now is done by the sweep instead.
OVERDUE_GRACE = dt.timedelta(seconds=60)
# A delivery being attempted is not picked up by anyone else for this long.
DELIVERY_CLAIM_SECONDS = 60


def format_duration(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "?"
    seconds = int(milliseconds // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def describe(kind: str, run: BuildRun, timeout: dt.timedelta | None = None) -> tuple[str, str]:
    """Title and body of a notice, in words an operator reads at a glance."""
    what = run.command or "build"
    where = " ".join(part for part in (run.env, f"on {run.host}" if run.host else "") if part)
    if kind == NotificationKind.BUILD_STARTED:
        title = f"Build started: {what}"
    elif kind == NotificationKind.BUILD_COMPLETED:
        title = f"Build completed: {what} in {format_duration(run.duration_ms)}"
    elif kind == NotificationKind.BUILD_FAILED:
        exit_text = f", exit code {run.exit_code}" if run.exit_code is not None else ""
        title = f"Build failed: {what} after {format_duration(run.duration_ms)}{exit_text}"
    else:
        silence = int((timeout or dt.timedelta()).total_seconds())
        title = f"Build stale: {what}: no heartbeat for {silence}s"
    lines = [
        title,
        f"Run: {run.run_id} {where}".rstrip(),
        f"Source: {run.repo} {run.branch} {run.commit}".rstrip() if run.repo or run.branch else "",
        f"Reason: {run.status_reason}" if run.status_reason else "",
    ]
    return title[:300], "\n".join(line for line in lines if line)


def webhook_body(kind: str, run: BuildRun, title: str) -> str:
    return json.dumps(
        {
            "kind": kind,
            "title": title,
            "run": {
                "runId": str(run.run_id),
                "status": run.status,
                "env": run.env,
                "origin": run.origin,
                "command": run.command,
                "host": run.host,
                "repo": run.repo,
                "branch": run.branch,
                "commit": run.commit,
                "startedAt": run.started_at.isoformat(),
                "endedAt": run.ended_at.isoformat() if run.ended_at else None,
                "durationMs": run.duration_ms,
                "exitCode": run.exit_code,
                "reason": run.status_reason,
            },
        },
        separators=(",", ":"),
    )


def enqueue(task: str, *args) -> bool:
    """Send a django-q2 task; False when the broker is unreachable (the sweep catches up)."""
    from django_q.tasks import async_task

    try:
        async_task(task, *args)
    except Exception:  # broker down: the periodic sweep sends it later
        logger.warning("could not queue %s; the sweep will send it", task, exc_info=True)
        return False
    return True


def notify_staff(kind: str, run: BuildRun, *, timeout: dt.timedelta | None = None) -> list:
    """Notices about ``run`` for every active staff user, plus webhooks; sent after commit."""
    return notify_staff_of([(kind, run, timeout)])


def notify_staff_of(announcements: list) -> list:
    """``notify_staff`` for several ``(kind, run, timeout)`` at once, in four queries."""
    if not announcements:
        return []
    unknown = {kind for kind, _, _ in announcements} - set(NotificationKind.values)
    if unknown:
        raise ValueError(f"not notification kinds: {sorted(unknown)}")
    staff = list(
        get_user_model().objects.filter(is_staff=True, is_active=True).values_list("pk", flat=True)
    )
    endpoints = list(WebhookEndpoint.objects.filter(active=True))
    notices, deliveries = [], []
    for kind, run, timeout in announcements:
        title, body = describe(kind, run, timeout)
        notices.extend(
            Notification(user_id=pk, kind=kind, run=run, title=title, body=body) for pk in staff
        )
        deliveries.extend(
            WebhookDelivery(endpoint=endpoint, kind=kind, body=webhook_body(kind, run, title))
            for endpoint in endpoints
            if endpoint.wants(kind)
        )
    notices = Notification.objects.bulk_create(notices)
    deliveries = WebhookDelivery.objects.bulk_create(deliveries)
    mailed = [notice.pk for notice in notices]

    def send():
        if mailed:
            enqueue(EMAIL_TASK, mailed)
        for delivery in deliveries:
            enqueue(WEBHOOK_TASK, delivery.pk)

    transaction.on_commit(send)
    return notices


def unread_count(user) -> int:
    if not getattr(user, "is_staff", False):
        return 0
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def mark_read(user, notification_ids=None) -> int:
    notices = Notification.objects.filter(user=user, read_at__isnull=True)
    if notification_ids is not None:
        notices = notices.filter(pk__in=notification_ids)
    return notices.update(read_at=Now())


# --- e-mail ------------------------------------------------------------------------------
def send_notification_emails(notification_ids) -> int:
    """Mail each notice to its user once; returns how many were sent."""
    sent = 0
    notices = Notification.objects.filter(
        pk__in=notification_ids, emailed_at__isnull=True
    ).select_related("user")
    for notice in notices:
        if not notice.user.email:
            continue
        # Claim first: a notice mailed by the sweep and the task at once goes out once.
        claimed = Notification.objects.filter(pk=notice.pk, emailed_at__isnull=True).update(
            emailed_at=Now()
        )
        if not claimed:
            continue
        try:
            send_mail(notice.title, notice.body, None, [notice.user.email])
        except Exception:
            Notification.objects.filter(pk=notice.pk).update(emailed_at=None)
            raise
        sent += 1
    return sent


# --- webhooks ----------------------------------------------------------------------------
def retry_delay(attempts: int) -> dt.timedelta:
    """Backoff after ``attempts`` failed tries: base × 2^(attempts−1), plus up to 20% jitter."""
    seconds = settings.BUILD_WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempts - 1)
    return dt.timedelta(seconds=seconds * (1 + random.random() * 0.2))


def _post(url: str, body: bytes, headers: dict) -> tuple[int | None, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(  # staff-configured http(s) URL
            request, timeout=settings.BUILD_WEBHOOK_TIMEOUT_SECONDS
        ) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        return None, str(error)[:500] or error.__class__.__name__


def _schedule_retry(delivery_id: int, when: dt.datetime) -> None:
    from django_q.models import Schedule
    from django_q.tasks import schedule

    try:
        schedule(
            WEBHOOK_TASK,
            delivery_id,
            name=f"webhook-delivery-{delivery_id}-{int(when.timestamp())}",
            schedule_type=Schedule.ONCE,
            next_run=when,
        )
    except Exception:  # the sweep retries it when it is due
        logger.warning("could not schedule the retry of delivery %s", delivery_id, exc_info=True)


def deliver_webhook(delivery_id: int) -> str:
    """One attempt at a pending delivery that is due; returns its status afterwards."""
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=Now()
    ).update(next_attempt_at=Now() + Value(dt.timedelta(seconds=DELIVERY_CLAIM_SECONDS)))
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    if not claimed:
        return delivery.status  # delivered, given up, not due yet or being attempted
    body = delivery.body.encode()
    headers = webhooks.signed_headers(
        delivery.endpoint.secret, body, kind=delivery.kind, delivery_id=delivery.pk
    )
    status_code, error = _post(delivery.endpoint.url, body, headers)
    attempts = delivery.attempts + 1
    outcome = {"attempts": attempts, "last_status_code": status_code, "last_error": error}
    if status_code is not None and 200 <= status_code < 300:
        outcome.update(status=DeliveryStatus.DELIVERED, delivered_at=Now(), last_error="")
    elif attempts >= settings.BUILD_WEBHOOK_MAX_ATTEMPTS:
        outcome.update(status=DeliveryStatus.FAILED)
        logger.warning("webhook delivery %s failed for good: %s", delivery.pk, error)
    else:
        due = timezone.now() + retry_delay(attempts)
        outcome.update(next_attempt_at=due)
    WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(**outcome)
    if outcome.get("next_attempt_at"):
        _schedule_retry(delivery.pk, outcome["next_attempt_at"])
    return outcome.get("status", DeliveryStatus.PENDING)


def flush_overdue(now: dt.datetime | None = None) -> tuple[int, int]:
    """Send e-mail and webhooks the queue left undone (no worker up, broker down)."""
    cutoff = (now or timezone.now()) - OVERDUE_GRACE
    emails = list(
        Notification.objects.filter(
            emailed_at__isnull=True,
            created_at__lt=cutoff,
            created_at__gte=cutoff - dt.timedelta(days=1),
            user__email__gt="",
        ).values_list("pk", flat=True)[:100]
    )
    mailed = send_notification_emails(emails) if emails else 0
    due = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lt=cutoff
    ).values_list("pk", flat=True)[:20]
    attempted = 0
    for delivery_id in list(due):
        deliver_webhook(delivery_id)
        attempted += 1
    return mailed, attempted
