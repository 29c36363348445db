import pytest

from builds.fairness import CYCLE, backoff_seconds, class_for_slot, serve_order, slot_share


def test_cycle_is_the_products_order():
    assert [str(cls) for cls in CYCLE] == [
        "P0", "P0", "P0", "P1", "P0", "P0", "P2", "P0", "P0", "P3"
    ]  # fmt: skip
    assert [class_for_slot(n) for n in range(10, 20)] == list(CYCLE)


@pytest.mark.parametrize(
    ("position", "order"),
    [
        (0, ["P0", "P1", "P2", "P3"]),
        (3, ["P1", "P0", "P2", "P3"]),
        (6, ["P2", "P0", "P1", "P3"]),
        (9, ["P3", "P0", "P1", "P2"]),
    ],
)
def test_serve_order_tries_the_slot_class_then_by_rank(position, order):
    assert [str(cls) for cls in serve_order(position)] == order


@pytest.mark.parametrize(
    ("priority_class", "busy", "share"),
    [
        ("P0", {"P0", "P1", "P2", "P3"}, 0.7),
        ("P3", {"P0", "P1", "P2", "P3"}, 0.1),
        ("P3", {"P3"}, 1.0),
        ("P1", {"P1", "P3"}, 0.9),  # P0's and P2's slots go to the highest busy class, P1
        ("P3", {"P1", "P3"}, 0.1),
        ("P2", {"P0"}, 0.0),
    ],
)
def test_slot_share(priority_class, busy, share):
    assert slot_share(priority_class, busy) == pytest.approx(share)


@pytest.mark.parametrize(("attempt", "base"), [(1, 30), (2, 30), (3, 30), (4, 10)])
def test_backoff_doubles_per_attempt_with_bounded_jitter(attempt, base):
    expected = base * 2 ** (attempt - 1)
    delays = [backoff_seconds(attempt, base) for _ in range(200)]
    assert min(delays) >= expected
    assert max(delays) <= expected * 1.2
    assert len(set(delays)) > 1


def test_backoff_is_capped():
    assert backoff_seconds(30, 30, cap=600) <= 720
