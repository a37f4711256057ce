"""A projection told of the records its consumer dead-letters (the optional ``dead_lettered``
step, ADR 0065), on real Kafka and PostgreSQL/SQLite: once per record, in the transaction that
records it as dead, with the decoded event or None; a failing step never sticks the consumer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.consumer import InboxRow
from services.kit.events import ReceivedEvent

from .conftest import Effect, new_id
from .test_consumer import consume_until, created, effects_for, send_all


class Recording:
    """Applies an Effect per event; an event for a ``poison…`` customer can never be applied;
    each dead-lettered record becomes an Effect ``dead`` (version -1 when it never decoded),
    except for a ``cursed…`` customer, whose step fails."""

    def fold(self, events: Sequence[ReceivedEvent]) -> list[ReceivedEvent]:
        if any(e.aggregate_id.startswith("poison") for e in events):
            raise ValueError("this event can never be applied")
        return list(events)

    async def apply(self, session: AsyncSession, folded: list[ReceivedEvent]) -> None:
        session.add_all(Effect(event_id=e.id, aggregate_id=e.aggregate_id, version=e.version) for e in folded)

    def committed(self, applied: None) -> None:
        return None

    async def dead_lettered(
        self, session: AsyncSession, record: ConsumerRecord[Any, Any], event: ReceivedEvent | None
    ) -> None:
        key = (record.key or b"").decode()
        session.add(Effect(event_id="dead", aggregate_id=key, version=-1 if event is None else event.version))
        await session.flush()
        if key.startswith("poison-cursed"):
            raise ValueError("the step fails after writing: its savepoint is rolled back")


async def test_the_projection_is_told_of_each_dead_lettered_record_once(kit_db, kafka_server, kafka_topic) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    topic = await kafka_topic("kit.dead-lettered")
    good_1, bad, cursed, good_2 = new_id(), new_id("poison"), new_id("poison-cursed"), new_id()
    poison = created(bad)
    records = [created(good_1), poison, None, created(cursed), poison, created(good_2)]  # poison twice
    await send_all(
        kafka_server.bootstrap_servers,
        topic,
        [(b"\x00not-an-event", b"C-undecodable", []) if r is None else (r.value, r.key, r.headers) for r in records],
    )
    consumer = await consume_until(
        engine, kafka_server.bootstrap_servers, topic, f"kit-dead-{uuid.uuid4().hex[:8]}", None,
        lambda: _has(engine, good_2), projection=Recording(), max_attempts=2, retry_backoff_s=0.01,
    )  # fmt: skip

    assert consumer.dead_total == 3  # the poison's second copy is a duplicate: not told again
    assert await effects_for(engine, good_1) == [1] and await effects_for(engine, good_2) == [1]
    async with engine.connect() as conn:
        told = (await conn.execute(select(Effect.aggregate_id, Effect.version).where(Effect.event_id == "dead"))).all()
        dead = (await conn.execute(select(InboxRow.status).where(InboxRow.status == "dead"))).all()
    assert sorted(told) == sorted([(bad, 1), ("C-undecodable", -1)])  # the failed step wrote nothing
    assert len(dead) == 3  # ... and the cursed record is recorded as dead all the same


async def _has(engine, customer_id: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(await effects_for(engine, customer_id))
