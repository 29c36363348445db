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
class Sweep:
    name: str
    run: Callable[[], object]
    interval_seconds: float


_kinds: dict[str, JobKind] = {}
_submission_checks: list[Callable] = []
_sweeps: dict[str, Sweep] = {}


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


def register_sweep(name: str, run: Callable, interval_seconds: float) -> None:
    """Periodic work of another app that the worker supervisor runs every ``interval_seconds``
    (the supervisor runs even when the workers are scaled to zero)."""
    _sweeps[name] = Sweep(name, run, interval_seconds)


def sweeps() -> list[Sweep]:
    return list(_sweeps.values())
