"""``/healthz``: is each service this process needs reachable right now."""

import datetime as dt
import logging
import os
from collections import Counter

import redis
from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from buildhub.storage import check_reachable
from builds.choices import LIVE_WORKER_STATES
from builds.models import Worker

logger = logging.getLogger("buildhub.health")


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def check_storage() -> None:
    for alias in ("default", "private"):
        storage = storages[alias]
        if isinstance(storage, FileSystemStorage):
            location = storage.location
            os.makedirs(location, exist_ok=True)
            if not os.access(location, os.W_OK):
                raise OSError(f"{alias} storage at {location} is not writable")
        else:
            check_reachable(storage)


def worker_sandboxes() -> dict[str, int]:
    """How the live workers run build steps: ``{"bwrap": 2}``, ``{"broken: ...": 1}``."""
    seen_after = timezone.now() - dt.timedelta(seconds=settings.JOB_LEASE_SECONDS)
    modes = Worker.objects.filter(state__in=LIVE_WORKER_STATES, last_seen__gte=seen_after)
    return dict(Counter(mode or "unknown" for mode in modes.values_list("sandbox", flat=True)))


def check_sandbox() -> None:
    broken = [mode for mode in worker_sandboxes() if mode.startswith("broken")]
    if broken:
        raise RuntimeError(f"a worker cannot sandbox its builds ({broken[0]})")


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "storage": check_storage,
    "sandbox": check_sandbox,
}
# Without Redis the service still accepts work into the database and serves it; live updates
# and dispatch wait until Redis is back. Without these, it cannot serve at all.
HARD_DEPENDENCIES = {"database", "storage"}


@never_cache
@require_GET
def healthz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as error:  # noqa: BLE001 - any failure means "down"; say which
            results[name] = {"status": "down", "error": f"{type(error).__name__}: {error}"[:300]}
        else:
            results[name] = {"status": "ok"}
    down = [name for name, result in results.items() if result["status"] != "ok"]
    if not down:
        status = "ok"
    elif HARD_DEPENDENCIES.intersection(down):
        status = "down"
    else:
        status = "degraded"
        logger.warning("healthz: degraded, down: %s", ", ".join(down))
    body = {"status": status, "down": down, "checks": results}
    if "database" not in down:
        body["sandbox"] = {"setting": settings.BUILD_SANDBOX, "workers": worker_sandboxes()}
    return JsonResponse(body, status=503 if status == "down" else 200)
