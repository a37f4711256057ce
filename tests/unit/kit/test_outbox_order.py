from types import SimpleNamespace

from services.kit.outbox import _ordered_prefix


def rows(*pairs: tuple[int, str]) -> list:
    return [SimpleNamespace(id=i, aggregate_id=a) for i, a in pairs]


def test_rows_behind_another_relays_row_of_the_same_aggregate_wait() -> None:
    batch = rows((2, "a"), (3, "b"), (4, "a"))
    pending = {"a": [1, 2, 4], "b": [3]}  # row 1 of aggregate a is held by another relay
    assert [r.id for r in _ordered_prefix(batch, pending)] == [3]


def test_a_whole_prefix_is_kept() -> None:
    batch = rows((1, "a"), (2, "a"), (3, "b"))
    assert [r.id for r in _ordered_prefix(batch, {"a": [1, 2], "b": [3]})] == [1, 2, 3]


def test_a_gap_stops_the_aggregate_at_the_gap() -> None:
    batch = rows((1, "a"), (3, "a"))
    assert [r.id for r in _ordered_prefix(batch, {"a": [1, 2, 3]})] == [1]
