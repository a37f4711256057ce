from types import SimpleNamespace

from services.kit.outbox import _publishable


def rows(*spec: tuple[int, str]) -> list:
    return [SimpleNamespace(id=i, aggregate_id=a) for i, a in spec]


def test_rows_behind_another_relays_row_of_their_aggregate_wait() -> None:
    # row 1 of aggregate a is pending but held by another relay
    batch = rows((2, "a"), (3, "b"), (4, "a"))
    assert [r.id for r in _publishable(batch, {"a": 1})] == [3]


def test_a_whole_batch_without_foreign_rows_is_published_in_id_order() -> None:
    batch = rows((1, "a"), (2, "a"), (3, "b"))
    assert [r.id for r in _publishable(batch, {})] == [1, 2, 3]


def test_a_gap_stops_the_aggregate_at_the_gap() -> None:
    batch = rows((1, "a"), (3, "a"), (4, "a"))
    assert [r.id for r in _publishable(batch, {"a": 2})] == [1]
