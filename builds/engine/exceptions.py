"""The exceptions that cross the engine's boundary: executors raise the first two, the
runner raises and catches the others. Kept apart so that an executor needs only this module,
not the runner, to say why a job failed."""


class RetryableError(Exception):
    """The attempt failed for a reason that may pass (network, a busy service)."""


class JobFailed(Exception):
    """The job cannot succeed as submitted; retrying would fail the same way."""


class JobStopped(Exception):
    """Raised inside the executor once the job must stop (cancel, timeout, lease, drain)."""


class WorkerDraining(Exception):
    """The claim refused a worker that is stopping while jobs wait: another must take them."""
