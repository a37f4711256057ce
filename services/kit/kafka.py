"""Kafka clients with bank-safe settings, and topic administration at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from services.kit.events import TOPIC_CONFIGS
from services.kit.logging import get_logger

log = get_logger("zhongtai.kafka")


def make_producer(bootstrap_servers: str, *, client_id: str, linger_ms: int = 2) -> AIOKafkaProducer:
    """An idempotent producer: ``acks=all``, ``enable_idempotence=True`` (start it in the loop)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=30_000,
        max_batch_size=256 * 1024,
    )


#: A record to send: topic (as on the broker), key, value, headers.
Outgoing = tuple[str, bytes, bytes, Sequence[tuple[str, bytes]]]

#: How the producer places a keyed record (aiokafka's default partitioner, which
#: :func:`make_producer`'s producers use): murmur2 of the key over the topic's partitions.
_PARTITIONER = DefaultPartitioner()


async def send_all(producer: AIOKafkaProducer, records: Iterable[Outgoing]) -> int:
    """Send ``records`` and wait until the broker has acknowledged every one; raise if any fails
    (then none of them may be taken as published). Returns how many were sent.

    Each record goes to the partition ``producer.send`` would pick for its key (the default
    partitioner over the topic's partitions), but the records of one partition go as one
    :meth:`~aiokafka.AIOKafkaProducer.create_batch` handed to ``send_batch``: one future per
    partition instead of one per record, ~23 µs less a record in rounds of 20 and ~50 in rounds
    of 5 (ADR 0073). A partition's records keep their order (appended in turn; a full batch is
    queued before the next one starts, and the accumulator sends a partition's batches in turn).
    """
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    sent = 0
    for topic, key, value, headers in records:
        all_partitions = partitions.get(topic)
        if all_partitions is None:
            all_partitions = partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = _PARTITIONER(key, all_partitions, all_partitions)
        batch = open_batches.get((topic, partition))
        if batch is None:
            batch = open_batches[topic, partition] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            # full: queue it, start the partition's next batch with this record
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[topic, partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # (aiokafka takes any first record into an empty batch; never drop one silently)
                raise MessageSizeTooLargeError(f"a record of {len(value)} bytes does not fit a batch")
        sent += 1
    for (topic, partition), batch in open_batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
    return sent


#: A consumer's session unless it asks for another (:func:`make_consumer`).
SESSION_TIMEOUT_MS = 10_000


def make_consumer(
    bootstrap_servers: str,
    *topics: str,
    group_id: str,
    client_id: str,
    max_poll_records: int = 500,
    group_instance_id: str | None = None,
    session_timeout_ms: int = SESSION_TIMEOUT_MS,
    linger_ms: int = 0,
    linger_bytes: int = 256 * 1024,
) -> AIOKafkaConsumer:
    """A consumer for projections: manual commits, from the earliest offset, short fetch wait.

    ``linger_ms`` > 0: the broker holds each fetch until ``linger_bytes`` are there or
    ``linger_ms`` have passed (Kafka's ``fetch.min.bytes``/``fetch.max.wait.ms``), so live
    traffic arrives in batches of about ``linger_ms`` of events instead of one record per fetch
    (a backlog still comes at once: it is over ``linger_bytes``). 0: a 20 ms wait, 1 byte.

    Partitions are assigned by range: with several members, partition *k* of every subscribed
    topic goes to the same member. The topics that carry a customer's events are keyed by
    customer id and have the same partition count, so each member then holds whole customers
    and members never update the same customer's rows. aiokafka's default (round robin over
    all topic-partitions) splits them whenever twice the partition count is not a multiple of
    the member count — e.g. 3 partitions and 4 members.

    Range is the only strategy offered (docs/adr/0057): aiokafka 0.14 sends one JoinGroup per
    listed strategy on every (re)join, the second with a changed protocol list, which makes the
    broker start another rebalance; two members rejoining together then fail each other's
    SyncGroup over and over (the chaos suite saw a group stand still for 30 s after a Kafka
    partition, aio-libs/aiokafka#1168). Every release since range was introduced offers it
    first, so a rolling upgrade from any of them shares it.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=linger_ms or 20,  # the 500 ms default alone ruins event-to-view latency
        fetch_min_bytes=linger_bytes if linger_ms else 1,
        max_poll_records=max_poll_records,
        isolation_level="read_committed",
        # A member that died holds its partitions until this runs out (or, with a static
        # ``group_instance_id``, until the same member comes back): docs/adr/0010.
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=min(3_000, session_timeout_ms // 3),
        group_instance_id=group_instance_id,
        partition_assignment_strategy=(RangePartitionAssignor,),
    )


def membership(consumer: AIOKafkaConsumer | None) -> dict[str, Any]:
    """What a group member's client holds of its membership, for the log line of a stalled group:
    its generation, member id, coordinator, whether a rejoin is pending, how many partitions it
    holds. Read from aiokafka's coordinator (it has no public accessor); {} before it started."""
    coordinator = getattr(consumer, "_coordinator", None)
    if consumer is None or coordinator is None:
        return {}
    try:
        return {
            "generation": coordinator.generation,
            "member_id": coordinator.member_id,
            "coordinator": coordinator.coordinator_id,
            "rejoin_pending": coordinator._rejoin_needed_fut.done(),
            "partitions_held": len(consumer.assignment()),
        }
    except Exception as exc:  # (a newer aiokafka moved them: the stall is still logged, without them)
        return {"membership": f"unreadable: {type(exc).__name__}"}


def rebalancing(consumer: AIOKafkaConsumer) -> bool:
    """Whether the member is between assignments: its group told it to rejoin, or it is rejoining.

    An offset commit sent then fails; worse, one that reaches the broker after the new generation
    formed is answered IllegalGeneration, on which aiokafka drops the member's id, so the member
    joins as a new one and the group waits out the old id's session (6–10 s) before anyone
    consumes. Kafka's Java client sends no commit while it rebalances either."""
    coordinator = getattr(consumer, "_coordinator", None)
    try:
        return bool(
            consumer._subscription.reassignment_in_progress
            or (coordinator is not None and coordinator._rejoin_needed_fut.done())
        )
    except AttributeError:  # (a newer aiokafka moved them: commit as before)
        return False


async def commit_unless_rebalancing(
    consumer: AIOKafkaConsumer, offsets: Mapping[Any, int] | None = None, *, give_up_after_s: float
) -> bool:
    """Commit ``offsets`` (the consumed positions when None); False, sending nothing, while the
    group is rebalancing (:func:`rebalancing`: a commit then fails, or costs the member its id).
    The partitions' next owner — maybe this member, at its next poll — then reads those records
    again from the last commit, so a consumer committing this way must make a re-delivery a
    no-op. A group that rebalanced while the commit was on its way raises ``CommitFailedError``
    (the same re-delivery follows). Given up after ``give_up_after_s`` (a session) with
    ``TimeoutError``: by then the member's id has expired, and a commit still waiting for the
    coordinator would go out with it once the broker is back and cost the member its new id
    (aiokafka resets it on UnknownMemberId), holding the group for another session."""
    if rebalancing(consumer):
        return False
    await asyncio.wait_for(consumer.commit(dict(offsets) if offsets is not None else None), give_up_after_s)
    return True


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Return once every partition of the new topics has a leader (producers can send at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            for t in described
        )
        if ready or loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, Mapping[str, str]] | None = None,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    prefix: str = "",
) -> list[str]:
    """Create missing topics (with their configs, e.g. compaction); returns those created.

    ``topics`` holds logical names (default: the platform's, :data:`TOPIC_CONFIGS`); each is
    created as ``prefix + name`` (``ZT_KAFKA_TOPIC_PREFIX``, a namespace per environment).
    """
    wanted = {prefix + name: cfg for name, cfg in (TOPIC_CONFIGS if topics is None else topics).items()}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication_factor, topic_configs=dict(cfg))
            for name, cfg in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
            log.info("topics created", topics=[t.name for t in missing])
            await _wait_for_leaders(admin, [t.name for t in missing], timeout_s)
        return [t.name for t in missing]
    finally:
        await admin.close()


class ProducerLifecycle:
    """Starts and stops a producer shared by a process's components (``start()``/``stop()``)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()
