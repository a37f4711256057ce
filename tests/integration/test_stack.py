"""The launcher gives us REAL Apache Kafka and PostgreSQL (devtools/stack.py via tests/conftest.py).

These tests prove the behaviour the platform relies on, which Kafka look-alikes and SQLite
do not give: the idempotent producer, transactions with read_committed isolation, separate
databases per test, and `FOR UPDATE SKIP LOCKED` for outbox relays.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devtools import stack

pytestmark = pytest.mark.integration


async def _consume_all(bootstrap: str, topic: str, expected: int, **kwargs: object) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kwargs,  # type: ignore[arg-type]
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < expected:
            batch = await consumer.getmany(timeout_ms=10_000)
            if not batch:
                break
            values.extend(rec.value for recs in batch.values() for rec in recs if rec.value is not None)
    finally:
        await consumer.stop()
    return values


async def test_idempotent_produce_and_consume(kafka_server: stack.KafkaLike, kafka_topic) -> None:
    topic = await kafka_topic("stack.idempotent", partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap_servers, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [f"event-{i}".encode() for i in range(20)]
        for i, value in enumerate(sent):
            meta = await producer.send_and_wait(topic, value, key=f"k{i % 5}".encode())
            assert meta.topic == topic and meta.offset >= 0
    finally:
        await producer.stop()

    received = await _consume_all(kafka_server.bootstrap_servers, topic, len(sent))
    assert sorted(received) == sorted(sent)


async def test_transactions_hide_aborted_records(kafka_server: stack.KafkaLike, kafka_topic) -> None:
    topic = await kafka_topic("stack.tx")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_server.bootstrap_servers, transactional_id=f"tx-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    received = await _consume_all(kafka_server.bootstrap_servers, topic, 2, isolation_level="read_committed")
    assert received == [b"committed", b"committed-2"]


async def _scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def test_postgres_databases_are_separate(postgres_server: stack.PostgresLike) -> None:
    suffix = uuid.uuid4().hex[:8]
    url_a = postgres_server.create_database(f"stack_a_{suffix}")
    url_b = postgres_server.create_database(f"stack_b_{suffix}")
    assert url_a.startswith("postgresql+asyncpg://") and url_a != url_b
    a, b = create_async_engine(url_a), create_async_engine(url_b)
    try:
        version = await _scalar(a, "SELECT version()")
        assert str(version).startswith("PostgreSQL ")
        async with a.begin() as conn:
            await conn.execute(text("CREATE TABLE only_in_a (id int)"))
        assert await _scalar(a, "SELECT to_regclass('only_in_a') IS NOT NULL") is True
        assert await _scalar(b, "SELECT to_regclass('only_in_a') IS NOT NULL") is False
        assert await _scalar(b, "SELECT current_database()") == f"stack_b_{suffix}"
    finally:
        await a.dispose()
        await b.dispose()
        postgres_server.drop_database(f"stack_a_{suffix}")
        postgres_server.drop_database(f"stack_b_{suffix}")


async def test_for_update_skip_locked(pg_url: str) -> None:
    """Two relays claiming outbox rows concurrently never get the same row."""
    engine = create_async_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE outbox (id int PRIMARY KEY, sent bool DEFAULT false)"))
            await conn.execute(text("INSERT INTO outbox (id) SELECT generate_series(1, 4)"))
        claim = text("SELECT id FROM outbox WHERE NOT sent ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED")
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            got_first = (await first.execute(claim)).scalars().all()
            got_second = (await second.execute(claim)).scalars().all()
            assert got_first == [1, 2]
            assert got_second == [3, 4]
            # Everything is locked now: a third claimer gets nothing instead of blocking.
            async with engine.connect() as third:
                await third.begin()
                assert (await third.execute(claim)).scalars().all() == []
                await third.rollback()
            await first.rollback()
            await second.rollback()
    finally:
        await engine.dispose()


async def test_sqlite_url_fixture(sqlite_url: str) -> None:
    engine = create_async_engine(sqlite_url)
    try:
        assert await _scalar(engine, "SELECT 1") == 1
    finally:
        await engine.dispose()
