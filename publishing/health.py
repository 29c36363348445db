"""Release health: adoption and failure rate per release, and the app's failure threshold.

- **Adoption** of a release: the devices whose last check-in (in the last
  ``RELEASE_HEALTH_WINDOW_DAYS``) says they run it, out of every device of the app's
  environment that checked in in that window.
- **Failure rate** of a release: the devices that reported it failing (Expo
  ``expo-recent-failed-update-ids`` or ``expo-fatal-error``, CodePush ``DeploymentFailed``),
  out of the devices known to have tried it (ran it, or reported it failing); each device
  counts once. Reports from clients without a device id are counted (``failure_reports``)
  but are not in the rate.
- **Threshold**: when the current release of an environment has been tried by at least the
  app's ``failure_min_devices`` and its failure rate reaches ``failure_threshold_percent``,
  it is halted (``rollout_percent`` set to 0: devices that have it keep it, no other device
  is offered it) or rolled back to the release before it (halted instead when there is
  none), once; the admin log records it and the account's owners are mailed.
"""

import datetime as dt
import logging

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import Now
from django.utils import timezone
from django_q.tasks import async_task

from buildhub.errors import ServiceError
from builds.choices import MembershipRole
from publishing import releases
from publishing.choices import DeviceOutcome, FailureAction
from publishing.models import App, DeviceCheckin, Release, ReleaseCheckinCount, ReleaseDevice

logger = logging.getLogger("buildhub.health")

SYSTEM_USERNAME = "buildhub-system"  # the admin log's author of what BuildHub did by itself
NOTICE_TASK = "publishing.tasks.send_health_notice"
SHOWN_RELEASES = 20


def percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def device_counts(release_ids) -> dict[int, dict]:
    """``{release id: {"tried", "failed"}}``: distinct devices per release."""
    rows = (
        ReleaseDevice.objects.filter(release_id__in=release_ids)
        .values("release_id")
        .annotate(
            tried=Count("device_id", distinct=True),
            failed=Count("pk", filter=Q(outcome=DeviceOutcome.FAILED)),
        )
    )
    return {row["release_id"]: {"tried": row["tried"], "failed": row["failed"]} for row in rows}


def release_health(app: App, env: str, now: dt.datetime | None = None) -> dict:
    """Adoption and failure rate of the environment's latest releases (newest first)."""
    now = now or timezone.now()
    window = settings.RELEASE_HEALTH_WINDOW_DAYS
    since = now - dt.timedelta(days=window)
    shown = list(
        Release.objects.filter(app=app, env=env)
        .select_related("version")
        .order_by("-published_at", "-id")[:SHOWN_RELEASES]
    )
    ids = [release.pk for release in shown]
    running: dict[int | None, int] = dict(  # None: the embedded bundle or unknown
        DeviceCheckin.objects.filter(app=app, env=env, last_seen__gte=since)
        .values("running_release_id")
        .annotate(devices=Count("pk"))
        .values_list("running_release_id", "devices")
    )
    active = sum(running.values())
    tried = device_counts(ids)
    counted = {
        row["release_id"]: row
        for row in ReleaseCheckinCount.objects.filter(release_id__in=ids, hour__gte=since)
        .values("release_id")
        .annotate(
            checks=Sum("checks"),
            offered=Sum("offered"),
            failures=Sum("failures"),
            successes=Sum("successes"),
        )
    }
    live = next((release.pk for release in shown if release.rolled_back_at is None), None)
    rows = []
    for release in shown:
        devices = tried.get(release.pk, {"tried": 0, "failed": 0})
        counts = counted.get(release.pk, {})
        rows.append(
            {
                "id": release.pk,
                "version": release.version.number,
                "published_at": release.published_at,
                "live": release.pk == live,
                "directive": release.directive,
                "rollout_percent": release.rollout_percent,
                "rolled_back_at": release.rolled_back_at,
                "health_action": release.health_action,
                "health_action_at": release.health_action_at,
                "devices_running": running.get(release.pk, 0),
                "adoption_percent": percent(running.get(release.pk, 0), active),
                "devices_tried": devices["tried"],
                "devices_failed": devices["failed"],
                "failure_rate_percent": percent(devices["failed"], devices["tried"]),
                "checks": counts.get("checks") or 0,
                "offered": counts.get("offered") or 0,
                "failure_reports": counts.get("failures") or 0,
                "success_reports": counts.get("successes") or 0,
            }
        )
    return {
        "env": env,
        "window_days": window,
        "active_devices": active,
        "devices_on_embedded_or_unknown": running.get(None, 0),
        "failure_threshold_percent": app.failure_threshold_percent,
        "failure_action": app.failure_action,
        "failure_min_devices": app.failure_min_devices,
        "releases": rows,
    }


def crosses(app: App, tried: int, failed: int) -> bool:
    threshold = app.failure_threshold_percent
    return (
        threshold is not None
        and tried >= max(app.failure_min_devices, 1)
        and failed * 100 >= threshold * tried
    )


def judge(release_ids, app_ids) -> list[Release]:
    """Halt or roll back the releases among ``release_ids`` (of apps with a threshold among
    ``app_ids``) whose failure rate crossed their app's threshold; called after a batch of
    check-ins was written. Returns the releases acted on."""
    candidates = list(
        Release.objects.filter(
            pk__in=release_ids,
            app_id__in=app_ids,
            app__failure_threshold_percent__isnull=False,
            rolled_back_at__isnull=True,
            health_action="",
            directive="",
        ).select_related("app__account", "version")
    )
    if not candidates:
        return []
    counts = device_counts([release.pk for release in candidates])
    acted = []
    for release in candidates:
        found = counts.get(release.pk, {"tried": 0, "failed": 0})
        if crosses(release.app, found["tried"], found["failed"]) and act_on_failures(
            release, found["tried"], found["failed"]
        ):
            acted.append(release)
    return acted


@transaction.atomic
def act_on_failures(release: Release, tried: int, failed: int) -> bool:
    """Take the app's failure action on ``release`` if it is still its environment's current
    release and nobody acted on it yet; False when there was nothing to do."""
    app, env = release.app, release.env
    current = (
        Release.objects.select_for_update()
        .filter(app=app, env=env, rolled_back_at__isnull=True)
        .order_by("-published_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    if current != release.pk:
        return False  # a newer release (or a rollback) replaced it meanwhile
    action = app.failure_action
    claimed = Release.objects.filter(pk=release.pk, health_action="").update(
        health_action=action, health_action_at=Now()
    )
    if not claimed:
        return False
    rate = percent(failed, tried)
    reason = (
        f"failure rate {rate}% ({failed} of {tried} devices) reached the threshold of "
        f"{app.failure_threshold_percent}%"
    )
    outcome = ""
    if action == FailureAction.ROLLBACK:
        try:
            previous = releases.rollback(app, env)
            outcome = f"rolled back to v{previous.version.number}"
        except ServiceError:
            action = FailureAction.HALT
            Release.objects.filter(pk=release.pk).update(health_action=action)
            outcome = "halted (no earlier release to roll back to)"
    if action == FailureAction.HALT:
        Release.objects.filter(pk=release.pk).update(rollout_percent=0)
        transaction.on_commit(lambda: releases.invalidate_update_cache(app, env))
        outcome = outcome or f"halted (rollout {release.rollout_percent}% → 0%)"
    message = f"Release v{release.version.number} on {env} {outcome}: {reason}."
    LogEntry.objects.log_actions(
        user_id=system_user().pk,
        queryset=[app],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )
    logger.warning("%s: %s", app.slug, message)
    transaction.on_commit(lambda: notify(app.pk, f"{app.name}: {message}"))
    return True


def system_user():
    """The user the admin log names for what BuildHub did by itself (inactive, no password)."""
    user, created = get_user_model().objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def recipients(app_id: int) -> list[str]:
    """The account's owners' addresses (every member's when no owner has one)."""
    app = App.objects.select_related("account").get(pk=app_id)
    members = list(
        app.account.memberships.exclude(user__email="").values_list("role", "user__email")
    )
    owners = [email for role, email in members if role == MembershipRole.OWNER]
    return sorted(set(owners or [email for _, email in members]))


def notify(app_id: int, message: str) -> None:
    """Mail the account about a halt or rollback, through the task queue (or at once when
    the broker is unreachable)."""
    try:
        async_task(NOTICE_TASK, app_id, message)
    except Exception:  # noqa: BLE001 - broker down: mail from here rather than not at all
        logger.warning("could not queue the release health notice; mailing it now")
        send_notice(app_id, message)


def send_notice(app_id: int, message: str) -> int:
    to = recipients(app_id)
    if not to:
        logger.warning("no address to tell of: %s", message)
        return 0
    return send_mail(message[:200], message, None, to)
