"""services.kit.kafka: the bank-safe client settings (the clients are built, inspected and closed, never started)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.kit.kafka import make_consumer, make_producer

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
