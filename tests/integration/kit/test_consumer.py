"""Inbox consumer and relay guarantees on real Kafka and PostgreSQL/SQLite."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from services.kit.applier import BatchApplier
from services.kit.consumer import InboxConsumer, InboxRow
from services.kit.db import create_engine
from services.kit.events import TOPIC_CUSTOMER, ReceivedEvent, build_record, parse_record
from services.kit.kafka import make_producer
from services.kit.outbox import OutboxRelay
from services.kit.telemetry import current_traceparent, install_in_memory

from .conftest import Effect, new_id
from .test_outbox_relay import payload, read_topic, run_relay, topics, wait_unpublished, write_events

__all__ = ["topics"]  # the module fixture is shared with the relay tests


async def record_effect(session, event: ReceivedEvent) -> None:  # type: ignore[no-untyped-def]
    if event.message.customer_id.startswith("poison"):
        raise ValueError("this event can never be applied")
    session.add(Effect(event_id=event.id, aggregate_id=event.aggregate_id, version=event.version))


async def effects_for(engine, aggregate_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(select(Effect.version).where(Effect.aggregate_id == aggregate_id).order_by(Effect.id))
        return [r[0] for r in rows]


async def wait_for(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_relay_killed_after_publish_before_marking_has_its_effect_exactly_once(
    pg_kit_db, topics, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    url, engine = pg_kit_db
    customer_id = new_id()
    await write_events(engine, customer_id, range(1, 6))
    crashed = run_relay(url, topics, "crash-after-send", tmp_path / "relay.log")
    assert crashed.wait(60) == -9
    assert await wait_unpublished(engine, 5, timeout=1) == 5  # published, never marked
    restarted = run_relay(url, topics, "normal", tmp_path / "relay.log")
    try:
        assert await wait_unpublished(engine, 0) == 0
    finally:
        restarted.terminate()
        restarted.wait(30)
    on_kafka = await read_topic(topics, {customer_id}, 10)
    assert len(on_kafka) == 10  # every event twice: at-least-once delivery

    producer = make_producer(topics, client_id="dlq")
    await producer.start()
    consumer = InboxConsumer(
        engine=engine, bootstrap_servers=topics, group_id=f"effects-{uuid.uuid4().hex[:8]}",
        topics=[TOPIC_CUSTOMER], handler=record_effect, dlq_producer=producer,
    )  # fmt: skip
    await consumer.start()
    try:
        assert await wait_for(lambda: _count_inbox(engine, customer_id, 5))
        await asyncio.sleep(1.0)  # let the duplicates arrive too
    finally:
        await consumer.stop()
        await producer.stop()
    assert await effects_for(engine, customer_id) == [1, 2, 3, 4, 5]  # effectively once, in order


async def _count_inbox(engine, customer_id: str, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await effects_for(engine, customer_id)) >= expected


def created(customer_id: str):  # type: ignore[no-untyped-def]
    """A CustomerCreated record (version 1) for ``customer_id``."""
    return build_record(
        payload(customer_id, 1), source="/t", aggregate_type="customer", aggregate_id=customer_id, version=1
    )


async def send_all(bootstrap: str, topic: str, messages) -> None:  # type: ignore[no-untyped-def]
    """Produce (value, key, headers) triples in order, each acknowledged before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for value, key, headers in messages:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def consume_until(engine, bootstrap: str, topic: str, group: str, handler, until, **kw) -> InboxConsumer:  # type: ignore[no-untyped-def]
    """Run an inbox consumer over ``topic`` until ``until()`` holds (asserted), then stop it."""
    dlq_producer = make_producer(bootstrap, client_id="dlq")
    await dlq_producer.start()
    consumer = InboxConsumer(
        engine=engine, bootstrap_servers=bootstrap, group_id=group, topics=[topic], handler=handler,
        dlq_producer=dlq_producer, **kw,
    )  # fmt: skip
    await consumer.start()
    try:
        assert await wait_for(until)
    finally:
        await consumer.stop()
        await dlq_producer.stop()
    return consumer


async def test_two_relays_on_postgresql_keep_each_aggregates_order(pg_kit_db, topics) -> None:  # type: ignore[no-untyped-def]
    url, _ = pg_kit_db
    engines = [create_engine(url), create_engine(url)]
    relays = [
        OutboxRelay(e, make_producer(topics, client_id=f"r{i}"), name=f"r{i}", owns_producer=True,
                    batch_size=7, poll_interval_s=0.05)
        for i, e in enumerate(engines)
    ]  # fmt: skip
    aggregates = [new_id() for _ in range(8)]
    for relay in relays:
        await relay.start()
    try:
        await asyncio.gather(
            *(write_events(engines[i % 2], agg, range(1, 26), after_commit=[r.wake for r in relays])
              for i, agg in enumerate(aggregates))
        )  # fmt: skip
        assert await wait_unpublished(engines[0], 0) == 0
        records = await read_topic(topics, set(aggregates), 8 * 25)
    finally:
        for relay in relays:
            await relay.stop()
        for engine in engines:
            await engine.dispose()
    by_key: dict[str, list[int]] = {}
    for r in records:
        by_key.setdefault(r.key.decode(), []).append(parse_record(list(r.headers), r.value).version)
    assert {k: v for k, v in by_key.items()} == {agg: list(range(1, 26)) for agg in aggregates}
    assert all(relay.published_total > 0 for relay in relays), [r.published_total for r in relays]


async def test_a_poison_event_goes_to_the_dlq_and_the_partition_keeps_flowing(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic("kit.poison")
    good_1, bad, good_2 = new_id(), f"poison-{uuid.uuid4().hex[:8]}", new_id()
    records = [created(good_1), created(bad), None, created(good_2)]
    await send_all(
        bootstrap,
        topic,
        [
            (b"\x00not-an-event", b"x", [("origin", b"fuzzer")]) if r is None else (r.value, r.key, r.headers)
            for r in records
        ],
    )
    group = f"kit-poison-{uuid.uuid4().hex[:8]}"
    consumer = await consume_until(
        engine, bootstrap, topic, group, record_effect, lambda: _count_inbox(engine, good_2, 1),
        max_attempts=3, retry_backoff_s=0.01,
    )  # fmt: skip

    assert await effects_for(engine, good_1) == [1]
    assert await effects_for(engine, good_2) == [1]
    async with engine.connect() as conn:
        dead = await conn.scalar(select(func.count()).select_from(InboxRow).where(InboxRow.status == "dead"))
    assert dead == 2

    dlq = AIOKafkaConsumer(consumer.dlq_topic, bootstrap_servers=bootstrap, group_id=None,
                           auto_offset_reset="earliest")  # fmt: skip
    await dlq.start()
    try:
        dead_letters = []
        deadline = time.monotonic() + 20
        while len(dead_letters) < 2 and time.monotonic() < deadline:
            for records in (await dlq.getmany(timeout_ms=200)).values():
                dead_letters.extend(records)
    finally:
        await dlq.stop()
    assert len(dead_letters) == 2
    handler_failure = dict(next(r.headers for r in dead_letters if r.key == bad.encode()))
    assert handler_failure["dlq_attempts"] == b"3"
    assert b"can never be applied" in handler_failure["dlq_error"]
    assert handler_failure["ce_type"] == b"bank.customer.v1.CustomerCreated"  # original headers kept
    undecodable = dict(next(r.headers for r in dead_letters if r.key == b"x"))
    assert undecodable["origin"] == b"fuzzer"

    committed = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committed.start()
    try:
        assert await committed.committed(TopicPartition(topic, 0)) == 4  # nothing left behind
    finally:
        await committed.stop()


async def test_a_failed_batch_is_applied_in_halves_so_one_bad_event_costs_few_transactions(
    kit_db, kafka_server, kafka_topic, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # One event the handler can never apply, in a batch of 64: the batch fails; its halves are
    # applied in their own transactions, a failing half halved again down to a few records that
    # go one at a time — every good event applied once, in order, the bad one dead-lettered —
    # in ~2·log2(64) transactions instead of 64.
    _, engine = kit_db
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic("kit.halves")
    customers = [new_id() for _ in range(63)]
    bad = f"poison-{uuid.uuid4().hex[:8]}"
    records = [created(c) for c in customers[:40]] + [created(bad)] + [created(c) for c in customers[40:]]
    await send_all(bootstrap, topic, [(r.value, r.key, r.headers) for r in records])

    async def all_applied() -> bool:
        return all([await _count_inbox(engine, c, 1) for c in customers])

    transactions = 0
    applier_transaction = BatchApplier.transaction

    async def counted(self, pairs, marks):  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return await applier_transaction(self, pairs, marks)

    monkeypatch.setattr(BatchApplier, "transaction", counted)
    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-halves-{uuid.uuid4().hex[:8]}", record_effect, all_applied,
        max_records=64, max_attempts=2, retry_backoff_s=0.01, trace_each_max=0,
    )  # fmt: skip
    assert [await effects_for(engine, c) for c in customers] == [[1]] * len(customers)
    assert await effects_for(engine, bad) == []
    assert consumer.batches_split == 1
    # the batch (1) + two halves per level down to 8 records (2 + 2 + 2) + the 8 one at a time,
    # the bad one twice (max_attempts): 1 + 6 + 7 + 2 = 16 — not 64 + 1
    assert transactions <= 16, transactions
    async with engine.connect() as conn:
        dead = await conn.scalar(select(func.count()).select_from(InboxRow).where(InboxRow.status == "dead"))
    assert dead == 1


@pytest.mark.parametrize("collisions", [1, 2])
async def test_a_batch_that_collides_with_another_member_is_applied_again_whole(
    pg_kit_db, kafka_server, kafka_topic, collisions: int
) -> None:  # type: ignore[no-untyped-def]
    # Another member (here: another connection) records one of the batch's events in the inbox
    # while the batch is in flight, as after a rebalance. The batch's inbox insert collides; it
    # is applied again as a whole, skipping that event, not split into one transaction per record.
    # With 2: the other member commits again during the retry (its next batch of the same
    # records) — the batch is retried again, still whole.
    url, engine = pg_kit_db
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic("kit.collide")
    customers = [new_id() for _ in range(5)]
    records = [created(c) for c in customers]
    taken = [parse_record(r.headers, r.value) for r in (records[3], records[2])][:collisions]  # "the other member's"
    await send_all(bootstrap, topic, [(r.value, r.key, r.headers) for r in records])

    other = create_engine(url)
    attempts = 0

    async def handler(session, event: ReceivedEvent) -> None:  # type: ignore[no-untyped-def]
        nonlocal attempts
        if event.aggregate_id == customers[0]:  # the first record: a new attempt at the batch
            attempts += 1
            if attempts <= collisions:
                mine = taken[attempts - 1]
                async with other.begin() as conn:
                    await conn.execute(
                        InboxRow.__table__.insert().values(
                            event_id=mine.id, event_type=mine.type, topic=topic, partition=0, offset=3,
                            status="applied", error=None, processed_at=datetime.now(UTC),
                        )
                    )  # fmt: skip
        await record_effect(session, event)

    try:
        consumer = await consume_until(
            engine, bootstrap, topic, f"kit-collide-{uuid.uuid4().hex[:8]}", handler,
            lambda: _count_inbox(engine, customers[4], 1),
        )  # fmt: skip
    finally:
        await other.dispose()
    assert (consumer.batches_retried, consumer.batches_split) == (collisions, 0)
    effects = {c: await effects_for(engine, c) for c in customers}
    others = {t.aggregate_id for t in taken}
    assert effects == {c: ([] if c in others else [1]) for c in customers}  # each once; the taken ones not here


async def test_a_small_batch_traces_each_event_and_a_big_one_gets_one_linked_span(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    # Live traffic (a batch of at most trace_each_max records): each event's processing span is
    # the child of its producer's span, one trace end to end. A backlog: ONE span for the batch,
    # a root linked to the events' producer spans (OpenTelemetry's batch-processing convention).
    memory = install_in_memory()
    _, engine = kit_db
    bootstrap = kafka_server.bootstrap_servers

    async def run(trace_each_max: int) -> tuple[str, list[tuple[str, str]], list[Any]]:
        topic = await kafka_topic(f"kit.traced{trace_each_max}")
        sent: list[tuple[str, str]] = []  # (customer id, producer span's trace id)
        messages = []
        for _ in range(6):
            customer_id = new_id()
            with trace.get_tracer("test").start_as_current_span("producer") as producer_span:
                record = build_record(
                    payload(customer_id, 1), source="/t", aggregate_type="customer", aggregate_id=customer_id,
                    version=1, traceparent=current_traceparent(),
                )  # fmt: skip
            sent.append((customer_id, format(producer_span.get_span_context().trace_id, "032x")))
            messages.append((record.value, record.key, record.headers))
        await send_all(bootstrap, topic, messages)
        memory.spans.clear()
        await consume_until(
            engine, bootstrap, topic, f"kit-traced-{uuid.uuid4().hex[:8]}", record_effect,
            lambda: _each_applied(engine, [c for c, _ in sent]), max_records=6, trace_each_max=trace_each_max,
        )  # fmt: skip
        return topic, sent, [s for s in memory.spans.get_finished_spans() if s.name == f"{topic} process"]

    _, sent, each = await run(trace_each_max=6)
    assert sorted(format(s.context.trace_id, "032x") for s in each) == sorted(t for _, t in sent)
    assert all(s.parent is not None and s.attributes["messaging.message.id"] for s in each)

    _, sent, spans = await run(trace_each_max=0)
    assert spans and all(s.parent is None for s in spans)  # roots: no per-event spans
    assert sum(s.attributes["messaging.batch.message_count"] for s in spans) == 6
    linked = {format(link.context.trace_id, "032x") for s in spans for link in s.links}
    assert linked == {t for _, t in sent}


async def _each_applied(engine, customers: list[str]) -> bool:  # type: ignore[no-untyped-def]
    for customer_id in customers:
        if not await _count_inbox(engine, customer_id, 1):
            return False
    return True


async def _inbox_statuses(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Inbox rows per status."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(InboxRow.status, func.count()).group_by(InboxRow.status))
        return dict(rows.all())  # type: ignore[arg-type]


#: Overlapped writes even for the tiny batches these tests use.
OVERLAPPED = {"overlap_writes": True, "overlap_min_records": 1}


def _versioned(customer_id: str, version: int, event_id: str | None = None):  # type: ignore[no-untyped-def]
    return build_record(
        payload(customer_id, version), source="/t", aggregate_type="customer", aggregate_id=customer_id,
        version=version, event_id=event_id,
    )  # fmt: skip


async def _send_redeliveries(kafka_server, kafka_topic, name: str, count: int, *, extra: int | None = None):  # type: ignore[no-untyped-def]
    """Per new customer, in order: versions 1, 2, the first record again, 3, then a stale version
    1 (a new event); then an event of version ``extra``, if given. (bootstrap, topic, customers)."""
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic(name)
    customers = [new_id() for _ in range(count)]
    messages = []
    for c in customers:
        first = _versioned(c, 1)
        messages += [first, _versioned(c, 2), first, _versioned(c, 3), _versioned(c, 1)]  # dup, then stale
        messages += [] if extra is None else [_versioned(c, extra)]
    await send_all(bootstrap, topic, [(m.value, m.key, m.headers) for m in messages])
    return bootstrap, topic, customers


async def test_overlapped_writes_apply_each_event_once_with_duplicates_and_stale_versions_across_batches(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    # Batch N+1 is staged while batch N is still being written: a redelivered event whose first
    # copy is in N, and an old version that N makes stale, must be no-ops in N+1 too (N+1 counts
    # what N will have stored). Tiny batches put such pairs across batch boundaries.
    _, engine = kit_db
    bootstrap, topic, customers = await _send_redeliveries(kafka_server, kafka_topic, "kit.overlap", 6)

    async def all_recorded() -> bool:  # 4 distinct events per customer (the duplicate is one of them)
        return sum((await _inbox_statuses(engine)).values()) >= 4 * len(customers)

    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-overlap-{uuid.uuid4().hex[:8]}", record_effect, all_recorded,
        max_records=2, **OVERLAPPED,
    )  # fmt: skip
    assert {c: await effects_for(engine, c) for c in customers} == {c: [1, 2, 3] for c in customers}
    assert await _inbox_statuses(engine) == {"applied": 3 * len(customers), "stale": len(customers)}
    assert (consumer.writes_failed, consumer.batches_split) == (0, 0)


async def test_without_inbox_rows_for_versioned_events_redeliveries_and_stale_versions_stay_no_ops(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    # ``record_versioned=False`` (the data hub, ADR 0049): an applied or stale event with an
    # aggregate version gets no inbox row; the stored version is the duplicate check. Within a
    # batch, across overlapped batches, and when a second group re-reads the whole topic (every
    # event redelivered), each event still takes effect once; an unversioned event keeps its row.
    _, engine = kit_db
    bootstrap, topic, customers = await _send_redeliveries(kafka_server, kafka_topic, "kit.versioned", 4, extra=0)

    async def each_has(versions: list[int]) -> bool:
        return [sorted(await effects_for(engine, c)) for c in customers] == [versions] * len(customers)

    options = {"record_versioned": False, "max_records": 2, **OVERLAPPED}
    await consume_until(
        engine, bootstrap, topic, f"kit-ver-{uuid.uuid4().hex[:8]}", record_effect, lambda: each_has([0, 1, 2, 3]),
        **options,
    )  # fmt: skip
    await asyncio.sleep(1.0)  # (nothing else may arrive)
    assert await _inbox_statuses(engine) == {"applied": len(customers)}  # the unversioned events only
    # A second group reads everything again, then one new version per customer.
    await send_all(bootstrap, topic, [(m.value, m.key, m.headers) for m in (_versioned(c, 4) for c in customers)])
    await consume_until(
        engine, bootstrap, topic, f"kit-ver-{uuid.uuid4().hex[:8]}", record_effect, lambda: each_has([0, 1, 2, 3, 4]),
        **options,
    )  # fmt: skip
    assert {c: await effects_for(engine, c) for c in customers} == {c: [1, 2, 3, 0, 4] for c in customers}
    assert await _inbox_statuses(engine) == {"applied": len(customers)}


class Effects:
    """A projection recording each event's effect in its batch's transaction."""

    def fold(self, events: list[ReceivedEvent]) -> list[ReceivedEvent]:
        return list(events)

    async def apply(self, session, events: list[ReceivedEvent]) -> None:  # type: ignore[no-untyped-def]
        for event in events:
            await record_effect(session, event)


@pytest.mark.parametrize("record_versioned", [True, False])
@pytest.mark.parametrize("max_records", [2, 7])
async def test_a_projections_batches_under_one_span_decide_duplicates_and_stale_versions_as_each_event_would(
    kit_db, kafka_server, kafka_topic, record_versioned: bool, max_records: int
) -> None:  # type: ignore[no-untyped-def]
    # A projection's batch under one span (the hub's bulk path) decides most events from what
    # the batch loaded, without a coroutine each: redeliveries within a batch and across
    # overlapped ones, stale versions and an undecodable record between them must come out as
    # the per-event path decides them.
    _, engine = kit_db
    bootstrap, topic, customers = await _send_redeliveries(kafka_server, kafka_topic, "kit.loaded", 4)
    await send_all(bootstrap, topic, [(b"\x00not-an-event", b"x", [("origin", b"fuzzer")])])
    late = [_versioned(c, 4) for c in customers]
    await send_all(bootstrap, topic, [(m.value, m.key, m.headers) for m in late])

    async def each_has_four() -> bool:
        return [await effects_for(engine, c) for c in customers] == [[1, 2, 3, 4]] * len(customers)

    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-loaded-{uuid.uuid4().hex[:8]}", None, each_has_four, projection=Effects(),
        trace_each_max=0, record_versioned=record_versioned, max_records=max_records, **OVERLAPPED,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # (nothing else may arrive)
    assert [await effects_for(engine, c) for c in customers] == [[1, 2, 3, 4]] * len(customers)
    n = len(customers)
    expected = {"applied": 4 * n, "stale": n, "dead": 1} if record_versioned else {"dead": 1}
    assert await _inbox_statuses(engine) == expected
    assert (consumer.writes_failed, consumer.batches_split) == (0, 0)


class FlakyEffects:
    """A projection recording each event's effect in its batch's transaction, whose second write
    fails once; it keeps which events it was told were committed."""

    def __init__(self) -> None:
        self.writes = 0
        self.told: list[str] = []

    def fold(self, events: list[ReceivedEvent]) -> list[ReceivedEvent]:
        return list(events)

    async def apply(self, session, events: list[ReceivedEvent]) -> list[str]:  # type: ignore[no-untyped-def]
        self.writes += 1
        if self.writes == 2:
            raise RuntimeError("the database went away for a moment")
        for event in events:
            await record_effect(session, event)
        return [event.aggregate_id for event in events]

    def committed(self, aggregate_ids: list[str]) -> None:
        self.told.extend(aggregate_ids)


async def test_a_failed_overlapped_write_is_applied_again_with_the_batch_staged_behind_it(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    # The write of one batch fails once (its projection's apply raises): the batch staged behind
    # it counted on that write, so it is rolled back too, and both are applied the plain way.
    _, engine = kit_db
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic("kit.overlap-fail")
    customers = [new_id() for _ in range(8)]
    await send_all(bootstrap, topic, [(r.value, r.key, r.headers) for r in (created(c) for c in customers)])
    projection = FlakyEffects()

    async def applied_and_told() -> bool:
        return await _each_applied(engine, customers) and len(projection.told) >= len(customers)

    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-overlap-fail-{uuid.uuid4().hex[:8]}", None, applied_and_told,
        max_records=2, projection=projection, **OVERLAPPED,
    )  # fmt: skip
    assert consumer.writes_failed == 1
    assert consumer.batches_split == 0  # applied again whole, on the plain path
    assert {c: await effects_for(engine, c) for c in customers} == {c: [1] for c in customers}
    # told once per committed event, never for the write that rolled back
    assert sorted(projection.told) == sorted(customers)


async def test_an_overlapped_consumer_stopped_mid_backlog_resumes_with_each_event_applied_once(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    # Stopping while one batch is being written and the next is staged: the write lands (or rolls
    # back), the staged batch rolls back, and the group's next member applies the rest once.
    _, engine = kit_db
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic("kit.overlap-stop")
    customers = [new_id() for _ in range(30)]
    await send_all(
        bootstrap, topic, [(m.value, m.key, m.headers) for c in customers for m in (_versioned(c, 1), _versioned(c, 2))]
    )
    group = f"kit-overlap-stop-{uuid.uuid4().hex[:8]}"

    handled = 0

    async def slow_effect(session, event: ReceivedEvent) -> None:  # type: ignore[no-untyped-def]
        nonlocal handled
        handled += 1
        await asyncio.sleep(0.03)  # a backlog that takes a while: the stop lands mid-way
        await record_effect(session, event)

    async def effects_total() -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(Effect)) or 0)

    async def some_handled() -> bool:
        return handled >= 8

    first = await consume_until(
        engine, bootstrap, topic, group, slow_effect, some_handled,
        max_records=4, **OVERLAPPED,
    )  # fmt: skip
    assert first.applied_total < 60  # stopped mid-way

    async def all_applied() -> bool:
        return await effects_total() >= 60

    await consume_until(
        engine, bootstrap, topic, group, record_effect, all_applied, max_records=4, **OVERLAPPED,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # anything applied twice would show by now
    assert {c: await effects_for(engine, c) for c in customers} == {c: [1, 2] for c in customers}


async def _customers_created(kafka_server, kafka_topic, name: str, count: int) -> tuple[str, str, list[str]]:  # type: ignore[no-untyped-def]
    """(bootstrap, topic, ids): a new topic holding a CustomerCreated event per new id."""
    bootstrap = kafka_server.bootstrap_servers
    topic = await kafka_topic(name)
    ids = [new_id() for _ in range(count)]
    await send_all(bootstrap, topic, [(r.value, r.key, r.headers) for r in map(created, ids)])
    return bootstrap, topic, ids


class _States(list[tuple[bool, str]]):
    """The consumer's ``on_state`` reports, in order."""

    async def __call__(self, consuming: bool, reason: str) -> None:
        self.append((consuming, reason))


async def test_a_batch_failing_on_the_infrastructure_is_retried_whole_and_never_dead_lettered(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    """The handler's session fails as a lost database would, many more times than max_attempts:
    the events wait (the consumer says it is not consuming), then apply once, none dead-lettered."""
    _, engine = kit_db
    bootstrap, topic, ids = await _customers_created(kafka_server, kafka_topic, "kit.outage", 3)
    outage = {"left": 8}
    states = _States()

    async def flaky(session, event: ReceivedEvent) -> None:  # type: ignore[no-untyped-def]
        if outage["left"] > 0:
            outage["left"] -= 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        await record_effect(session, event)

    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-outage-{uuid.uuid4().hex[:8]}", flaky,
        lambda: _count_inbox(engine, ids[-1], 1), max_attempts=2, retry_backoff_s=0.01,
        on_state=states, max_fault_backoff_s=0.05,
    )  # fmt: skip

    assert [await effects_for(engine, i) for i in ids] == [[1], [1], [1]]
    assert consumer.dead_total == 0 and consumer.batches_split == 0
    assert consumer.fault_retries >= 1
    async with engine.connect() as conn:
        dead = await conn.scalar(select(func.count()).select_from(InboxRow).where(InboxRow.status == "dead"))
    assert dead == 0
    assert (False, "waiting for the database or broker: ConnectionRefusedError") in states
    assert states[-1] == (True, "consuming")


async def test_a_consumer_task_that_dies_is_restarted_and_applies_everything_once(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    bootstrap, topic, ids = await _customers_created(kafka_server, kafka_topic, "kit.supervised", 4)
    crashes = {"left": 1}

    async def crash_once(applied: list[ReceivedEvent]) -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("a bug after the commit")

    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-supervised-{uuid.uuid4().hex[:8]}", record_effect,
        lambda: _all_applied(engine, ids), after_commit=crash_once, max_fault_backoff_s=0.05,
    )  # fmt: skip

    assert consumer.restarts == 1
    assert [await effects_for(engine, i) for i in ids] == [[1]] * 4  # the redelivery was a no-op


async def _all_applied(engine, ids: list[str]) -> bool:  # type: ignore[no-untyped-def]
    return all([await effects_for(engine, i) == [1] for i in ids])


async def test_a_consumer_wedged_without_an_error_is_found_stalled_restarted_and_applies_everything_once(
    kit_db, kafka_server, kafka_topic
) -> None:  # type: ignore[no-untyped-def]
    """The loop waits on a call that never returns (no error, the member still heart-beats): the
    group's watchdog sees records waiting and the committed offset standing still, says so and
    starts a new consumer, which applies every event once."""
    _, engine = kit_db
    bootstrap, topic, ids = await _customers_created(kafka_server, kafka_topic, "kit.wedged", 4)
    wedges = {"left": 1}
    states = _States()

    async def wedged_once(session, event: ReceivedEvent) -> None:  # type: ignore[no-untyped-def]
        if wedges["left"]:
            wedges["left"] -= 1
            await asyncio.Event().wait()  # e.g. a request whose answer never comes
        await record_effect(session, event)

    async def all_applied() -> bool:  # (SQLite: the wedged transaction locks the file until it is cancelled)
        try:
            return await _all_applied(engine, ids)
        except OperationalError:
            return False

    started = time.monotonic()
    consumer = await consume_until(
        engine, bootstrap, topic, f"kit-wedged-{uuid.uuid4().hex[:8]}", wedged_once, all_applied,
        stall_after_s=3, on_state=states, max_fault_backoff_s=0.05,
    )  # fmt: skip

    assert consumer.stalls == 1 and consumer.restarts == 1
    assert (False, "group stalled: GroupStalled") in states and states[-1] == (True, "consuming")
    assert [await effects_for(engine, i) for i in ids] == [[1]] * 4
    assert time.monotonic() - started < 30  # found within a few probes of the threshold
