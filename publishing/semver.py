"""Binary version ranges of CodePush releases, as npm's semver reads them.

A release targets the app binaries whose version is in its range: ``*``, ``1.2.3``,
``1.2.x`` / ``1.2`` / ``1.x`` / ``1``, ``~1.2.3``, ``^1.2.3``, ``>=1.0.0 <2.0.0``,
``1.0.0 - 1.4.0`` and alternatives joined by ``||``. App versions are numbers only
(``1.0`` is ``1.0.0``, as CodePush clients report Android's ``versionName``).
"""

import re
from functools import lru_cache

Version = tuple[int, int, int]
NUMBER = re.compile(r"^v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?$")
COMPARATOR = re.compile(r"^(<=|>=|<|>|=|~|\^)?\s*(.*)$")
TOP: Version = (10**9, 0, 0)
# One comparator: (low, low inclusive, high, high inclusive).
Bounds = tuple[Version, bool, Version, bool]


class RangeError(ValueError):
    """Not a range this server understands; the message says what it got."""


def parse_version(text: str) -> Version | None:
    """An app's version, or None when it is not one (``1``, ``1.0`` and ``1.0.0`` are)."""
    match = NUMBER.match(text.strip().split("-")[0].split("+")[0])
    if not match or any(part and not part.isdigit() for part in match.groups()):
        return None
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


def _partial(text: str) -> tuple[list[int], int]:
    """The numbers given and how many (``1.2.x`` → [1, 2], 2; ``*`` → [], 0)."""
    if text in ("", "*", "x", "X"):
        return [], 0
    match = NUMBER.match(text)
    if not match:
        raise RangeError(f"{text!r} is not a version")
    numbers = []
    for part in match.groups():
        if part is None or not part.isdigit():
            break
        numbers.append(int(part))
    return numbers, len(numbers)


def _padded(numbers: list[int]) -> Version:
    major, minor, patch = (numbers + [0, 0, 0])[:3]
    return major, minor, patch


def _next(numbers: list[int]) -> Version:
    """The first version past a partial one (``1.2`` → 1.3.0, ``1`` → 2.0.0)."""
    if not numbers:
        return TOP
    bumped = numbers[:-1] + [numbers[-1] + 1]
    return _padded(bumped)


def _bounds(token: str) -> Bounds:
    """One comparator as (low, low inclusive, high, high inclusive)."""
    comparator = COMPARATOR.match(token)
    assert comparator is not None  # an optional operator and (.*) match any token
    operator, rest = comparator.groups()
    numbers, given = _partial(rest.strip())
    low, high = (0, 0, 0), TOP
    if operator in (None, "="):
        if given == 3:
            return _padded(numbers), True, _padded(numbers), True
        return _padded(numbers), True, _next(numbers), False
    if operator == "~":
        return _padded(numbers), True, _next(numbers[:2] if given >= 2 else numbers), False
    if operator == "^":
        first = next((i for i, n in enumerate(numbers) if n != 0), min(given, 3) - 1)
        return _padded(numbers), True, _next(numbers[: max(first, 0) + 1]), False
    if operator == ">=":
        return _padded(numbers), True, high, False
    if operator == ">":
        return (
            (_padded(numbers), False, high, False)
            if given == 3
            else (
                _next(numbers),
                True,
                high,
                False,
            )
        )
    if operator == "<":
        return low, True, _padded(numbers), False
    # "<=": a partial version includes all of it
    return (low, True, _padded(numbers), True) if given == 3 else (low, True, _next(numbers), False)


@lru_cache(maxsize=1024)
def parse_range(text: str) -> tuple[tuple[Bounds, ...], ...]:
    """``text`` as alternatives, each a tuple of comparators; RangeError when it is none."""
    text = text.strip()
    if not text or len(text) > 200:
        raise RangeError("a binary version range is 1 to 200 characters, e.g. 1.2.x or ^1.2.0")
    alternatives: list[tuple[Bounds, ...]] = []
    for alternative in text.split("||"):
        alternative = alternative.strip()
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", alternative)
        if hyphen:
            low, _ = _partial(hyphen.group(1))
            high, given = _partial(hyphen.group(2))
            upper = (_padded(high), True) if given == 3 else (_next(high), False)
            alternatives.append(((_padded(low), True, *upper),))
            continue
        tokens = re.sub(r"(<=|>=|<|>|=|~|\^)\s+", r"\1", alternative).split()
        alternatives.append(tuple(_bounds(token) for token in tokens or ["*"]))
    return tuple(alternatives)


def _within(version: Version, bounds) -> bool:
    low, low_inclusive, high, high_inclusive = bounds
    above = version > low or (low_inclusive and version == low)
    below = version < high or (high_inclusive and version == high)
    return above and below


def satisfies(version: Version, text: str) -> bool:
    return any(all(_within(version, b) for b in alt) for alt in parse_range(text))


def older_than_range(version: Version, text: str) -> bool:
    """Whether every binary the range targets is newer than ``version``."""
    lowest = min(max(b[0] for b in alt) for alt in parse_range(text))
    return version < lowest


def validate_range(text: str) -> str:
    parse_range(text)
    return text.strip()
