"""Pure rules of service order and retry timing (no database)."""

import random

from builds.choices import PriorityClass

P0, P1, P2, P3 = (PriorityClass.P0, PriorityClass.P1, PriorityClass.P2, PriorityClass.P3)

# Under saturation, ten claims serve the classes in exactly this order.
CYCLE: tuple[PriorityClass, ...] = (P0, P0, P0, P1, P0, P0, P2, P0, P0, P3)
CLASSES_BY_RANK: tuple[PriorityClass, ...] = (P0, P1, P2, P3)


def class_for_slot(position: int) -> PriorityClass:
    return CYCLE[position % len(CYCLE)]


def serve_order(position: int) -> list[PriorityClass]:
    """Classes to try for the claim at ``position``: the slot's class, then by rank."""
    wanted = class_for_slot(position)
    return [wanted, *(cls for cls in CLASSES_BY_RANK if cls != wanted)]


def slot_share(priority_class: str, busy_classes: set[str]) -> float:
    """The fraction of claims a class gets while ``busy_classes`` all have waiting jobs.

    A slot of a class with nothing waiting goes to the highest waiting class.
    """
    if priority_class not in busy_classes:
        return 0.0
    slots = 0
    for wanted in CYCLE:
        served = (
            wanted
            if wanted in busy_classes
            else next(cls for cls in CLASSES_BY_RANK if cls in busy_classes)
        )
        slots += served == priority_class
    return slots / len(CYCLE)


def backoff_seconds(attempt: int, base: float, cap: float = 3600.0, jitter: float = 0.2) -> float:
    """Delay before retry number ``attempt`` (1-based): base * 2^(attempt-1), plus up to 20%."""
    delay = min(base * 2 ** (max(attempt, 1) - 1), cap)
    return delay + random.uniform(0, delay * jitter)
