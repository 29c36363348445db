"""Where other apps plug into the engine (filled from their AppConfig.ready())."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    name: str
    execute: Callable  # execute(context) -> dict | None (the job's result)
    staff_only: bool = False
    counts_as_build: bool = True  # counted against the monthly build quota
    description: str = ""


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    run: Callable  # run() -> anything worth printing, or None
    interval_seconds: float
    retention: bool = False  # also run by ``manage.py sweep_history``


_kinds: dict[str, JobKind] = {}
_submission_checks: list[Callable] = []
_periodic: dict[str, PeriodicTask] = {}
_job_keepers: list[Callable] = []
_job_outputs: list[Callable] = []


def register_kind(
    name: str, execute: Callable, *, staff_only=False, counts_as_build=True, description=""
) -> None:
    if name in _kinds and _kinds[name].execute is not execute:
        raise ValueError(f"job kind {name!r} is registered already")
    _kinds[name] = JobKind(name, execute, staff_only, counts_as_build, description)


def get_kind(name: str) -> JobKind | None:
    return _kinds.get(name)


def kinds() -> dict[str, JobKind]:
    return dict(_kinds)


def register_submission_check(check: Callable) -> None:
    """``check(account, kind, params, request_meta)`` runs before a job is created; it may raise
    a ServiceError to refuse the submission."""
    if check not in _submission_checks:
        _submission_checks.append(check)


def submission_checks() -> list[Callable]:
    return list(_submission_checks)


def register_periodic(
    name: str, run: Callable, *, interval_seconds: float, retention: bool = False
) -> None:
    """``run()`` is called by the worker supervisor every ``interval_seconds`` (and once when it
    starts); it runs whether or not workers are up. ``retention``: it deletes old history,
    and the operators' ``sweep_history`` command runs it too."""
    _periodic[name] = PeriodicTask(name, run, interval_seconds, retention)


def periodic_tasks(*, retention: bool | None = None) -> list[PeriodicTask]:
    return [task for task in _periodic.values() if retention in (None, task.retention)]


def register_job_keeper(keeper: Callable) -> None:
    """``keeper(job_ids)`` returns those of ``job_ids`` that rows of its app still need: the
    retention sweep (builds.retention) keeps them past JOB_RETENTION_DAYS."""
    if keeper not in _job_keepers:
        _job_keepers.append(keeper)


def job_keepers() -> list[Callable]:
    return list(_job_keepers)


def register_job_outputs(lister: Callable) -> None:
    """``lister(job)`` returns what its app stored for the job, as ``{"artifact", "link"}``
    rows (a link an operator can open); the job's admin page lists them."""
    if lister not in _job_outputs:
        _job_outputs.append(lister)


def job_outputs(job) -> list[dict]:
    return [row for lister in _job_outputs for row in lister(job)]
