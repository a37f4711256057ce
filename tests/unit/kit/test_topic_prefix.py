"""ZT_KAFKA_TOPIC_PREFIX: validated, applied by ensure_topics and the relay at the Kafka boundary only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from bank.customer.v1 import events_pb2
from services.kit import kafka
from services.kit.config import ConfigError, ServiceSettings, load_settings
from services.kit.db import Base, UnitOfWork, create_engine
from services.kit.events import TOPIC_CONFIGS, TOPIC_CUSTOMER, TOPIC_CUSTOMER_VIEW
from services.kit.outbox import OutboxRelay, OutboxRow, add_event


@pytest.mark.parametrize("value", ["", "uat.", "t1a2b3.", "team_a-x.eu."])
def test_a_valid_prefix_is_accepted(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZT_KAFKA_TOPIC_PREFIX", value)
    assert load_settings(ServiceSettings).kafka_topic_prefix == value


@pytest.mark.parametrize("value", ["uat", "uat/", "u at.", "uät.", ".", "a" * 101 + "."])
def test_a_bad_prefix_stops_start_up_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZT_KAFKA_TOPIC_PREFIX", value)
    with pytest.raises(ConfigError):
        load_settings(ServiceSettings)
    assert "ZT_KAFKA_TOPIC_PREFIX" in capsys.readouterr().err


class FakeAdmin:
    """Stands in for AIOKafkaAdminClient: one topic exists already."""

    created: ClassVar[list[Any]] = []

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return ["env1.bank.product.v1", TOPIC_CUSTOMER]  # another namespace's topic does not count

    async def create_topics(self, topics: list[Any]) -> None:
        FakeAdmin.created.extend(topics)

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"topic": n, "error_code": 0, "partitions": [{"partition": 0, "leader": 1}]} for n in names]


async def test_ensure_topics_creates_the_prefixed_names_with_their_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", FakeAdmin)
    FakeAdmin.created = []
    created = await kafka.ensure_topics("unused:9092", partitions=3, prefix="env1.")
    want = {f"env1.{name}" for name in TOPIC_CONFIGS} - {"env1.bank.product.v1"}
    assert set(created) == want
    configs = {t.name: t.topic_configs for t in FakeAdmin.created}
    assert configs[f"env1.{TOPIC_CUSTOMER_VIEW}"] == {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    assert configs[f"env1.{TOPIC_CUSTOMER}"] == {}
    assert all(t.num_partitions == 3 for t in FakeAdmin.created)

    FakeAdmin.created = []
    assert await kafka.ensure_topics("unused:9092", {"x.dlq": {}}) == ["x.dlq"]  # no prefix: names as given


class FakeProducer:
    """What ``send_all`` uses of a producer (one partition; acks at once); keeps (topic, key)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sent.extend((topic, key) for key in batch)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Batch(list[bytes]):
    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> bool:  # type: ignore[override]
        super().append(key)
        return True

    def close(self) -> None:
        pass


async def test_the_relay_sends_to_the_prefixed_topic_and_the_row_keeps_the_logical_one(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with UnitOfWork(engine) as uow:
            for cid in ("c-1", "c-2"):
                event = events_pb2.CustomerCreated(customer_id=cid, version=1)
                event.customer.customer_id = cid
                add_event(uow.session, event, source="/t", aggregate_type="customer", aggregate_id=cid, version=1)
            await uow.commit()
        producer = FakeProducer()
        relay = OutboxRelay(engine, producer, topic_prefix="uat.")  # type: ignore[arg-type]
        assert await relay.publish_once() == 2
        assert producer.sent == [(f"uat.{TOPIC_CUSTOMER}", b"c-1"), (f"uat.{TOPIC_CUSTOMER}", b"c-2")]
        async with UnitOfWork(engine) as uow:
            rows = (await uow.session.execute(select(OutboxRow.topic, OutboxRow.published_at))).all()
        assert {topic for topic, _ in rows} == {TOPIC_CUSTOMER}
        assert all(published is not None for _, published in rows)

        unprefixed = FakeProducer()
        async with UnitOfWork(engine) as uow:
            event = events_pb2.CustomerCreated(customer_id="c-3", version=1)
            event.customer.customer_id = "c-3"
            add_event(uow.session, event, source="/t", aggregate_type="customer", aggregate_id="c-3", version=1)
            await uow.commit()
        assert await OutboxRelay(engine, unprefixed).publish_once() == 1  # type: ignore[arg-type]
        assert unprefixed.sent == [(TOPIC_CUSTOMER, b"c-3")]
    finally:
        await engine.dispose()
