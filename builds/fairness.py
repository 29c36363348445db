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


def claims_until_served(
    position: int, waiting: dict[str, int], target_class: str, ahead_in_class: int
) -> int:
    """Which claim from now (1 = the next one) takes a job that waits behind ``ahead_in_class``
    others of ``target_class``, while ``waiting`` jobs of each other class stay eligible.

    Follows the cycle from the shared cursor ``position``; a slot whose class is empty goes to
    the highest class with work. Whole cycles are skipped at once while no class runs empty,
    so the cost depends on how often a class empties (at most four times), not on the depth.
    """
    remaining: dict[str, int] = {cls: max(0, waiting.get(cls, 0)) for cls in CLASSES_BY_RANK}
    remaining[target_class] = ahead_in_class + 1  # the job itself is the last one that counts
    claims = 0
    while True:
        if position % len(CYCLE) == 0:
            busy = {cls for cls, count in remaining.items() if count}
            per_cycle = {cls: round(slot_share(cls, busy) * len(CYCLE)) for cls in busy}
            # Skip cycles only while every busy class keeps at least one job afterwards.
            cycles = min((remaining[cls] - 1) // per_cycle[cls] for cls in busy)
            if cycles:
                for cls in busy:
                    remaining[cls] -= cycles * per_cycle[cls]
                claims += cycles * len(CYCLE)
                position += cycles * len(CYCLE)
        wanted = class_for_slot(position)
        served = (
            wanted if remaining[wanted] else next(cls for cls in CLASSES_BY_RANK if remaining[cls])
        )
        remaining[served] -= 1
        claims += 1
        position += 1
        if served == target_class and remaining[target_class] == 0:
            return claims
