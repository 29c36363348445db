from django.db import models


class RunEnv(models.TextChoices):
    PROD = "prod", "Production"
    STAGING = "staging", "Staging"
    DEV = "dev", "Development"


class RunOrigin(models.TextChoices):
    SERVER = "server", "Server"
    FRONTEND = "frontend", "Frontend"
    ROOT_HARNESS = "root-harness", "Root harness"
    OTHER = "other", "Other"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILED = "failed", "Failed"
    STALE = "stale", "Stale"


# A finished run stays finished; a stale run may still finish (its build_completed is late).
TERMINAL_STATES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED})
LIVE_STATES = frozenset({RunStatus.RUNNING, RunStatus.STALE})


class EventKind(models.TextChoices):
    BUILD_STARTED = "build_started", "Build started"
    STAGE_STARTED = "stage_started", "Stage started"
    STAGE_COMPLETED = "stage_completed", "Stage completed"
    BUILD_COMPLETED = "build_completed", "Build completed"
    BUILD_FAILED = "build_failed", "Build failed"
    HEARTBEAT = "heartbeat", "Heartbeat"


STAGE_EVENTS = frozenset({EventKind.STAGE_STARTED, EventKind.STAGE_COMPLETED})
TERMINAL_EVENTS = {
    EventKind.BUILD_COMPLETED: RunStatus.SUCCESS,
    EventKind.BUILD_FAILED: RunStatus.FAILED,
}


class NotificationKind(models.TextChoices):
    """What staff hear about: the start and end of a run, never its stages or heartbeats."""

    BUILD_STARTED = "build_started", "Build started"
    BUILD_COMPLETED = "build_completed", "Build completed"
    BUILD_FAILED = "build_failed", "Build failed"
    STALE = "stale", "Build stale"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
