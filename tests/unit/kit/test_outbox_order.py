from types import SimpleNamespace

from services.kit.outbox import _publishable


def rows(*spec: tuple[int, str, bool]) -> list:
    return [SimpleNamespace(id=i, aggregate_id=a, blocked=b) for i, a, b in spec]


def test_a_row_behind_another_relays_row_of_its_aggregate_waits_with_all_later_ones() -> None:
    # row 2 of aggregate a has an older pending row outside this batch (held by another relay)
    batch = rows((2, "a", True), (3, "b", False), (4, "a", False))
    assert [r.id for r in _publishable(batch)] == [3]


def test_a_whole_unblocked_batch_is_published_in_id_order() -> None:
    batch = rows((1, "a", False), (2, "a", False), (3, "b", False))
    assert [r.id for r in _publishable(batch)] == [1, 2, 3]


def test_a_gap_stops_the_aggregate_at_the_gap() -> None:
    batch = rows((1, "a", False), (3, "a", True), (4, "a", False))
    assert [r.id for r in _publishable(batch)] == [1]
