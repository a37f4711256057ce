"""The kit's consumers join their group in one rebalance, on a real broker (docs/adr/0057).

aiokafka 0.14 sends one JoinGroup per partition-assignment strategy a consumer lists, the second
with a changed protocol list, so every (re)join started another rebalance; two members rejoining
at once (after a network partition expired both) could fail each other's SyncGroup for 30 s. The
group's generation counts its rebalances: it is read from the member (the broker only tells it).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer

from services.kit.kafka import make_consumer, membership, rebalancing


def _generation(consumer: AIOKafkaConsumer) -> int:
    return int(consumer._coordinator.generation)  # (aiokafka keeps it there; no public accessor)


async def _settled(consumers: list[AIOKafkaConsumer], partitions: int, timeout_s: float = 20.0) -> None:
    """Wait until the members hold every partition between them, in one generation."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = [c.assignment() for c in consumers]
        if all(held) and sum(map(len, held)) == partitions and len({_generation(c) for c in consumers}) == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"group not settled: {[(c.assignment(), _generation(c)) for c in consumers]}")


async def test_a_member_joins_an_empty_group_in_one_rebalance(kafka_server, kafka_topic) -> None:  # type: ignore[no-untyped-def]
    topic = await kafka_topic("join", partitions=3)
    consumer = make_consumer(
        kafka_server.bootstrap_servers, topic, group_id=f"join-{uuid.uuid4().hex[:8]}", client_id="join-test"
    )
    await consumer.start()
    try:
        await _settled([consumer], 3)
        assert _generation(consumer) == 1  # (two strategies listed: 2)
        # what a stalled member's log line says of it (services/kit/consumer.py)
        held = membership(consumer)
        assert held["generation"] == 1 and held["partitions_held"] == 3 and held["rejoin_pending"] is False
        assert held["member_id"] and held["coordinator"] is not None
        assert rebalancing(consumer) is False  # (its offsets are committed)
    finally:
        await consumer.stop()


async def test_two_members_joining_together_settle_in_at_most_two_rebalances(kafka_server, kafka_topic) -> None:  # type: ignore[no-untyped-def]
    topic = await kafka_topic("join", partitions=3)
    group = f"join-{uuid.uuid4().hex[:8]}"
    members = [
        make_consumer(kafka_server.bootstrap_servers, topic, group_id=group, client_id=f"join-test-{i}")
        for i in range(2)
    ]
    await asyncio.gather(*(m.start() for m in members))
    try:
        await _settled(members, 3)
        assert _generation(members[0]) <= 2  # together, or one after the other (two strategies: 3 or more)
    finally:
        await asyncio.gather(*(m.stop() for m in members))
