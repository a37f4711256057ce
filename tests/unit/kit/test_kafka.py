"""services.kit.kafka: the bank-safe client settings (the clients are built, inspected and closed, never started)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.errors import CommitFailedError

from services.kit.kafka import commit_unless_rebalancing, make_consumer, make_producer, membership, rebalancing

BOOTSTRAP = "127.0.0.1:1"  # never contacted


async def test_the_producer_is_idempotent_with_acks_all() -> None:
    producer = make_producer(BOOTSTRAP, client_id="unit-producer")
    try:
        assert isinstance(producer, AIOKafkaProducer)
        assert producer._sender._acks == -1  # "all"
        assert producer._txn_manager is not None  # enable_idempotence=True
        assert producer._txn_manager.transactional_id is None  # idempotent, not transactional
        assert producer.client._client_id == "unit-producer"
        assert producer._request_timeout_ms == 30_000
        assert producer._message_accumulator._linger_time == 0.002  # linger_ms=2 by default
    finally:
        await producer.stop()


async def test_the_producer_linger_is_configurable() -> None:
    producer = make_producer(BOOTSTRAP, client_id="unit-producer", linger_ms=25)
    try:
        assert producer._message_accumulator._linger_time == 0.025
    finally:
        await producer.stop()


async def test_the_consumer_commits_manually_from_earliest_reading_committed_only() -> None:
    consumer = make_consumer(
        BOOTSTRAP, "t.one", "t.two", group_id="unit-group", client_id="unit-consumer", max_poll_records=42
    )
    try:
        assert isinstance(consumer, AIOKafkaConsumer)
        assert consumer._enable_auto_commit is False
        assert consumer._auto_offset_reset == "earliest"
        assert consumer._isolation_level == "read_committed"
        assert consumer._fetch_max_wait_ms == 20
        assert consumer._max_poll_records == 42
        assert consumer._group_id == "unit-group"
        assert consumer._client._client_id == "unit-consumer"
        assert consumer._heartbeat_interval_ms < consumer._session_timeout_ms
        assert consumer.subscription() == {"t.one", "t.two"}
    finally:
        await consumer.stop()


class _Cluster:
    """What an assignor reads of the cluster: each topic's partitions."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions[topic]))


TOPICS = ("bank.customer.v1", "bank.product.v1", "bank.subscription.v1")


def _assign(assignor: Any, members: int, partitions: int) -> dict[str, dict[str, list[int]]]:
    metadata = {f"m{i}": ConsumerProtocolMemberMetadata(0, list(TOPICS), b"") for i in range(members)}
    result = assignor.assign(_Cluster(dict.fromkeys(TOPICS, partitions)), metadata)
    return {member: dict(a.assignment) for member, a in result.items()}


def _co_located(assignment: dict[str, dict[str, list[int]]]) -> bool:
    """Does partition k of the customer topic sit with partition k of the subscription topic?"""
    return all(
        sorted(parts.get("bank.customer.v1", [])) == sorted(parts.get("bank.subscription.v1", []))
        for parts in assignment.values()
    )


async def test_the_consumer_offers_range_assignment_only() -> None:
    # One strategy: aiokafka 0.14 sends a JoinGroup per listed strategy, and the second one starts
    # another rebalance (docs/adr/0057; tests/integration/kit/test_consumer_group_join.py).
    consumer = make_consumer(BOOTSTRAP, "t.one", group_id="unit-group", client_id="unit-consumer")
    try:
        assert consumer._partition_assignment_strategy == (RangePartitionAssignor,)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(("members", "partitions"), [(2, 3), (3, 3), (4, 3), (2, 6), (4, 6), (5, 12)])
def test_range_assignment_keeps_each_customers_topics_on_one_member(members: int, partitions: int) -> None:
    # Customer and subscription events are keyed by customer id: co-located partitions mean a
    # member holds whole customers, so two hub replicas never update the same customer's rows.
    assert _co_located(_assign(RangePartitionAssignor, members, partitions))


def test_round_robin_would_split_a_customers_topics() -> None:
    # Why the default is not kept: 3 partitions, 4 members.
    assert not _co_located(_assign(RoundRobinPartitionAssignor, 4, 3))


async def test_membership_of_a_consumer_not_started_is_empty() -> None:
    consumer = make_consumer(BOOTSTRAP, "t.one", group_id="unit-group", client_id="unit-consumer")
    try:
        assert membership(consumer) == {}
        assert membership(None) == {}
    finally:
        await consumer.stop()


async def test_a_member_not_assigned_yet_is_rebalancing() -> None:
    # (its offsets are then not committed: services/kit/consumer.py, docs/adr/0057)
    consumer = make_consumer(BOOTSTRAP, "t.one", group_id="unit-group", client_id="unit-consumer")
    try:
        assert rebalancing(consumer) is True
    finally:
        await consumer.stop()


class _Committer:
    """What commit_unless_rebalancing calls on a consumer: ``commit`` (and nothing of a group)."""

    def __init__(self, outcome: BaseException | None = None, *, hang: bool = False) -> None:
        self.outcome, self.hang, self.sent = outcome, hang, list[object]()

    async def commit(self, offsets: object = None) -> None:
        self.sent.append(offsets)
        if self.hang:
            await asyncio.sleep(3600)
        if self.outcome is not None:
            raise self.outcome


async def test_commit_unless_rebalancing() -> None:
    # a member between assignments sends nothing: the next owner re-reads from the last commit
    idle = make_consumer(BOOTSTRAP, "t.one", group_id="unit-group", client_id="unit-consumer")
    try:
        assert await commit_unless_rebalancing(idle, give_up_after_s=1.0) is False
    finally:
        await idle.stop()
    ok = _Committer()
    assert await commit_unless_rebalancing(ok, {"tp": 5}, give_up_after_s=1.0) is True  # type: ignore[arg-type]
    assert ok.sent == [{"tp": 5}]
    # the group rebalanced while the commit was on its way: the caller decides (the kit consumer
    # logs it, the hub's topic indexes carry on: tests/unit/data_hub/test_topic_index.py)
    with pytest.raises(CommitFailedError):
        await commit_unless_rebalancing(_Committer(CommitFailedError("rebalanced")), give_up_after_s=1.0)  # type: ignore[arg-type]
    # the broker out of reach for a session: raised, the caller restarts its consumer
    with pytest.raises(TimeoutError):
        await commit_unless_rebalancing(_Committer(hang=True), give_up_after_s=0.05)  # type: ignore[arg-type]
