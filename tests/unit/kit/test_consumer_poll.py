"""The consumer's pipelined poll: a prefetched poll topped up with what arrived meanwhile keeps
every partition's records in offset order, aligned with their decoded events (no I/O: a
stand-in for the Kafka client's ``getmany``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord

from bank.customer.v1 import events_pb2
from services.kit.consumer import InboxConsumer, _decode
from services.kit.events import ReceivedEvent, build_record


def _record(tp: TopicPartition, offset: int) -> ConsumerRecord[Any, Any]:
    customer_id = f"c-{tp.partition}-{offset}"
    built = build_record(
        events_pb2.CustomerCreated(customer_id=customer_id, version=1),
        source="/test", aggregate_type="customer", aggregate_id=customer_id, version=1,
    )  # fmt: skip
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, built.key, built.value, None, 0, 0, built.headers)


class _Client:
    """Answers each ``getmany`` with the next prepared poll and remembers what was asked."""

    def __init__(self, *polls: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        self.polls = list(polls)
        self.asked: list[dict[str, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.asked.append({"timeout_ms": timeout_ms, "max_records": max_records})
        return self.polls.pop(0) if self.polls else {}


def _consumer(max_records: int) -> InboxConsumer:
    return InboxConsumer(
        engine=None,  # type: ignore[arg-type]
        bootstrap_servers="unused:9092",
        group_id="g",
        topics=["t"],
        handler=None,  # type: ignore[arg-type]
        dlq_producer=None,  # type: ignore[arg-type]
        max_records=max_records,
    )


async def test_top_up_appends_per_partition_in_offset_order_and_keeps_decoded_aligned() -> None:
    p0, p1, p2 = (TopicPartition("t", n) for n in range(3))
    first = {p0: [_record(p0, 0), _record(p0, 1)], p1: [_record(p1, 5)]}
    later = {p1: [_record(p1, 6), _record(p1, 7)], p2: [_record(p2, 9)]}
    client = _Client(first, later)
    consumer = _consumer(max_records=10)

    merged = await consumer._top_up(client, await consumer._poll(client))  # type: ignore[arg-type]

    assert {tp: [r.offset for r, _ in part] for tp, part in merged.items()} == {p0: [0, 1], p1: [5, 6, 7], p2: [9]}
    pairs = [pair for part in merged.values() for pair in part]
    assert all(isinstance(e, ReceivedEvent) for _, e in pairs)
    assert [(e.partition, e.offset) for _, e in pairs] == [(r.partition, r.offset) for r, _ in pairs]  # type: ignore[union-attr]
    assert client.asked[1] == {"timeout_ms": 0, "max_records": 7}  # only what is buffered, up to the room left


async def test_top_up_does_not_poll_a_full_batch_and_keeps_an_empty_top_up_as_is() -> None:
    p0 = TopicPartition("t", 0)
    full = {p0: [(r, _decode(r)) for r in (_record(p0, n) for n in range(3))]}
    client = _Client()
    consumer = _consumer(max_records=3)
    assert await consumer._top_up(client, full) == full  # type: ignore[arg-type]
    assert client.asked == []

    roomy = _consumer(max_records=5)
    assert await roomy._top_up(client, full) == full  # type: ignore[arg-type]
    assert client.asked == [{"timeout_ms": 0, "max_records": 2}]


async def test_a_failed_offset_commit_is_logged_and_dropped_not_raised() -> None:
    consumer = _consumer(max_records=10)
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(CommitFailedError("the group rebalanced"))
    consumer._offset_commit = failed
    await consumer._offsets_committed()  # the records are re-delivered to the new owner instead
    assert consumer._offset_commit is None
    await consumer._offsets_committed()  # nothing pending: a no-op


class _Assigned:
    """What ``_still_assigned`` reads of the Kafka client: the current assignment."""

    def __init__(self, *tps: TopicPartition) -> None:
        self._tps = set(tps)

    def assignment(self) -> set[TopicPartition]:
        return self._tps


def test_records_of_partitions_moved_to_another_member_are_left_to_it() -> None:
    from services.kit.consumer import _still_assigned

    kept, moved = TopicPartition("t", 0), TopicPartition("t", 1)
    batches = {tp: [(r, _decode(r)) for r in (_record(tp, 0), _record(tp, 1))] for tp in (kept, moved)}
    assert _still_assigned(_Assigned(kept, moved), batches) is batches  # nothing moved: as is
    assert _still_assigned(_Assigned(kept), batches) == {kept: batches[kept]}
    assert _still_assigned(_Assigned(), batches) == {}  # no partitions assigned: nothing to apply


def test_a_batch_staged_behind_another_counts_what_that_one_will_store() -> None:
    from services.kit.applier import _Batch, _carry, _Staged

    before = _Batch()
    before.inbox = [{"event_id": "e1"}, {"event_id": "e2"}]
    before.versions = {("customer", "a"): 3, ("customer", "b"): 1}
    written = _Staged({}, [], None, before, [], None, [])  # type: ignore[arg-type]
    assert written.ids == {"e1", "e2"} and written.versions == {("customer", "a"): 3, ("customer", "b"): 1}

    batch = _Batch()
    batch.seen = {"e2": False, "e3": False}  # as loaded: neither in the inbox yet
    batch.stored = {("customer", "a"): 1, ("customer", "b"): 5, ("customer", "c"): None}
    _carry(batch, written)
    assert batch.seen["e2"] is True and batch.seen["e3"] is False  # e2 is a duplicate of the other batch's
    assert batch.stored == {("customer", "a"): 3, ("customer", "b"): 5, ("customer", "c"): None}  # the newer wins
