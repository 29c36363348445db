from django.db import models


class Tier(models.TextChoices):
    FREE = "free", "Free"
    STARTER = "starter", "Starter"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class PriorityClass(models.TextChoices):
    """Queue classes; P0 is served most often (see the engine's fairness cycle)."""

    P0 = "P0", "P0 (Enterprise)"
    P1 = "P1", "P1 (Pro)"
    P2 = "P2", "P2 (Starter)"
    P3 = "P3", "P3 (Free)"


class MembershipRole(models.TextChoices):
    OWNER = "owner", "Owner"
    MEMBER = "member", "Member"


class AddOnKind(models.TextChoices):
    RECURRING_MONTHLY = "recurring_monthly", "+5 min, recurring monthly"
    PERMANENT = "permanent", "+10 min, permanent"


ADDON_MINUTES: dict[str, int] = {AddOnKind.RECURRING_MONTHLY: 5, AddOnKind.PERMANENT: 10}


class TokenScope(models.TextChoices):
    BUILDS_READ = "builds:read", "Read builds, logs and artifacts"
    BUILDS_WRITE = "builds:write", "Submit, cancel and retry builds"
    PUBLISH = "publish", "Publish versions and releases"
    EVENTS_WRITE = "events:write", "Post build lifecycle events"
    EVENTS_READ = "events:read", "Read the account's build runs, status and trends"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


TERMINAL_STATES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
RETRYABLE_END_STATES = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT})


class LogLevel(models.TextChoices):
    DEBUG = "debug", "Debug"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class WorkerState(models.TextChoices):
    STARTING = "starting", "Starting"
    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    DRAINING = "draining", "Draining"
    STOPPED = "stopped", "Stopped"


LIVE_WORKER_STATES = frozenset({WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY})
