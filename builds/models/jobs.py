import uuid

from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from builds.choices import TERMINAL_STATES, JobStatus, LogLevel, PriorityClass, WorkerState
from builds.models.accounts import Account


class Worker(models.Model):
    """One django-q2 cluster started by ``runcluster``: the unit that claims and runs jobs."""

    id = models.CharField(primary_key=True, max_length=120)  # host:pid:start
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    processes = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(
        max_length=16, choices=WorkerState.choices, default=WorkerState.STARTING
    )
    started_at = models.DateTimeField(db_default=Now())
    last_seen = models.DateTimeField(db_default=Now())
    drain_deadline = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # How its build steps run: "bwrap", "off", or "broken: why" (builds.engine.sandbox.probe).
    sandbox = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["state", "last_seen"], name="worker_state_seen")]

    def __str__(self):
        return self.id


class Job(models.Model):
    """A unit of build or publish work; the database row is the truth about it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=64)
    # No index of its own: job_account_recent starts with the account.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="jobs", db_index=False
    )
    priority_class = models.CharField(max_length=2, choices=PriorityClass.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    not_before = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField()
    # Microseconds from the submitting process: SQLite's clock has only milliseconds, and
    # "oldest first" needs an order between jobs submitted in the same millisecond.
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Looked up only among running jobs (job_running_by_account): an index of its own would
    # be written by every claim and finish.
    worker = models.ForeignKey(
        Worker,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        db_index=False,
    )
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    run_now = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=255, blank=True)
    log_seq = models.PositiveIntegerField(default=0, help_text="Last log line's sequence number.")
    state_seq = models.PositiveIntegerField(
        default=0,
        help_text="Counts announced state changes; live clients order status events by it.",
    )
    submitted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="job_unique_account_idempotency_key",
            ),
            models.CheckConstraint(
                condition=models.Q(progress__lte=100), name="job_progress_at_most_100"
            ),
            # The lease is the run's: the claim sets the worker, the token and the expiry in
            # the UPDATE that makes a job running, and every change out of running (finish,
            # retry, release, reap) clears all three in the same UPDATE. So a worker row
            # cannot be deleted while it runs a job (SET_NULL would break the first one).
            models.CheckConstraint(
                condition=~models.Q(status=JobStatus.RUNNING)
                | models.Q(
                    worker__isnull=False,
                    lease_token__isnull=False,
                    lease_expires_at__isnull=False,
                ),
                name="job_running_has_worker_and_lease",
            ),
            models.CheckConstraint(
                condition=models.Q(status=JobStatus.RUNNING)
                | models.Q(
                    worker__isnull=True, lease_token__isnull=True, lease_expires_at__isnull=True
                ),
                name="job_not_running_has_no_worker_or_lease",
            ),
        ]
        indexes = [
            # The claim's candidate search: queued jobs of one class, run_now first, oldest first.
            models.Index(
                "priority_class",
                models.F("run_now").desc(),
                "created_at",
                "id",  # the claim's whole order: its scan stops at the first row it may take
                name="job_queued_claim_order",
                condition=models.Q(status=JobStatus.QUEUED),
            ),
            # Running jobs, few at any time: per account for the claim, all of them for the
            # reaper and the worker pages.
            models.Index(
                fields=["account", "status"],
                name="job_running_by_account",
                condition=models.Q(status=JobStatus.RUNNING),
            ),
            models.Index(fields=["account", "-created_at"], name="job_account_recent"),
            models.Index(fields=["kind", "status", "finished_at"], name="job_kind_finished"),
            # The retention sweep's batches, oldest first (and the dashboard's last hours):
            # written once per job, when it finishes.
            models.Index(
                fields=["finished_at", "id"],
                name="job_finished",
                condition=models.Q(finished_at__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES


class JobLog(models.Model):
    # No index of its own: joblog_unique_job_seq starts with the job.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="logs", db_index=False)
    seq = models.PositiveIntegerField()
    ts = models.DateTimeField()
    level = models.CharField(max_length=8, choices=LogLevel.choices, default=LogLevel.INFO)
    message = models.TextField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="joblog_unique_job_seq")]

    def __str__(self):
        return f"{self.job_id}#{self.seq}"


class FairnessCursor(models.Model):
    """The shared position in the service cycle; one row, advanced inside each claim."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    position = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return f"cycle position {self.position}"


class HeatUp(models.Model):
    """An operator's floor on warm worker clusters until ``until``."""

    workers = models.PositiveSmallIntegerField()
    until = models.DateTimeField()
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.CharField(max_length=150, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "heat-up"

    def __str__(self):
        return f"{self.workers} worker(s) until {self.until:%Y-%m-%d %H:%M} UTC"
