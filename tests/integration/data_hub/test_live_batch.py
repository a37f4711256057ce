"""A live batch on PostgreSQL runs its steps as single statements (ADR 0052): the state row's
share lock with the rows it merges into, the fact writes as one statement of data-modifying CTEs,
the render's reads as one (holdings and net flows as LATERAL JSON). These tests hold it to the
SQLite path, which runs each step on its own: the same views, in the set that is active."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.synth import Synth, SynthEvent
from services.data_hub import schema, served, views
from services.data_hub.config import TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION
from services.data_hub.domain import Rules
from services.data_hub.event_log import FEED_KEY, customer_events
from services.data_hub.facts import apply_patches
from services.data_hub.fold import TRANSACTION_COLUMNS
from services.data_hub.main import MIGRATIONS
from services.data_hub.projector import HubProjection
from services.kit.applier import BatchApplier
from services.kit.bulk import COPY_MIN_ROWS, bulk_insert
from services.kit.db import UnitOfWork, create_engine
from services.kit.events import ReceivedEvent
from services.kit.inbox import _decode
from services.kit.migrations import upgrade
from tests.integration.data_hub.conftest import migrated_hub_engine


def _events() -> list[SynthEvent]:
    return Synth(seed=11, customers=6, months=2, prefix="lb", txn_scale=0.3).events()


async def _apply_live(engine: AsyncEngine, projection: HubProjection, events: Sequence[SynthEvent], start: int) -> None:
    """The events as live traffic: batches of up to five, each rendering its views inline."""
    applier = BatchApplier(
        engine=engine, group_id="lb", handler=None, projection=projection, dead_letters=None,  # type: ignore[arg-type]
        max_attempts=1, retry_backoff_s=0.0, trace_each_max=0,
    )  # fmt: skip
    records: list[Any] = []
    for offset, r in enumerate((e.record() for e in events), start):
        record = ConsumerRecord(r.topic, 0, offset, 0, 0, r.key, r.value, None, len(r.key), len(r.value), r.headers)
        records.append((record, _decode(record)))
    for i in range(0, len(records), 5):
        await applier.transaction(records[i : i + 5], [])


async def _docs(engine: AsyncEngine, name: str) -> dict[str, bytes]:
    async with UnitOfWork(engine) as uow:
        return await served.all_docs(uow.session, schema.SETS[name])


async def test_postgresql_and_sqlite_make_the_same_live_views(pg_url: str, sqlite_url: str) -> None:
    rules = Rules.from_json("")
    docs = []
    for url in (pg_url, sqlite_url):
        async with migrated_hub_engine(url) as engine:
            await _apply_live(engine, HubProjection(rules=rules, inline_render_max=100), _events(), 0)
            async with UnitOfWork(engine) as uow:  # what the batches left dirty (a new catalogue), as the worker
                await views.materialize(uow.session, schema.SETS["a"], rules, limit=1000)
                await uow.commit()
            docs.append(await _docs(engine, "a"))
    assert docs[0] and all(docs[0].values())
    assert docs[0] == docs[1]


async def test_a_batch_after_a_swap_lands_in_the_set_now_active(hub_engine: AsyncEngine) -> None:
    engine = hub_engine
    events = _events()
    half = len(events) // 2
    projection = HubProjection(rules=Rules.from_json(""), inline_render_max=100)
    await _apply_live(engine, projection, events[:half], 0)  # into set a: the projection's guess is a
    before = await _docs(engine, "a")
    async with UnitOfWork(engine) as uow:  # a rebuild's flip (its replay left out: b starts empty)
        await uow.session.execute(update(schema.state).where(schema.state.c.id == 1).values(active="b"))
        await uow.commit()
    await _apply_live(engine, projection, events[half:], half)
    assert await _docs(engine, "a") == before  # the retired set got nothing
    async with UnitOfWork(engine) as uow:
        b = schema.SETS["b"]
        landed = await uow.session.scalar(select(func.count()).select_from(b.transactions))
    assert landed == sum(e.payload.DESCRIPTOR.name == "TransactionPosted" for e in events[half:]) > 0


async def test_a_catch_up_batch_copies_its_rows_and_a_second_copy_of_it_changes_nothing(
    hub_engine: AsyncEngine,
) -> None:
    # A catch-up batch's transactions and feed rows go by COPY (ADR 0068). Applied a second time —
    # as a rebuild's replay and the live consumer overlap in a set — every row exists: the COPY
    # declines, the rows go insert-if-absent, and the set holds each row once.
    records = [
        ConsumerRecord(r.topic, 0, offset, 0, 0, r.key, r.value, None, len(r.key), len(r.value), r.headers)
        for offset, r in enumerate(e.record() for e in Synth(seed=12, customers=12, months=3, prefix="cu").events())
    ]
    projection = HubProjection(feed_topics=frozenset((TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION)))
    received = [event for record in records if isinstance(event := _decode(record), ReceivedEvent)]
    assert len(received) == len(records)
    patches = projection.fold(received)
    assert len(patches.transactions) >= COPY_MIN_ROWS and len(patches.feed) >= COPY_MIN_ROWS
    t = schema.SETS["a"]
    tables = (t.transactions, customer_events)
    counts = []
    for _ in range(2):
        async with UnitOfWork(hub_engine) as uow:
            await apply_patches(uow.session, t, patches)
            await uow.commit()
        async with UnitOfWork(hub_engine) as uow:
            counts.append([await uow.session.scalar(select(func.count()).select_from(table)) for table in tables])
    assert counts == [[len(patches.transactions), len(patches.feed)]] * 2
    async with UnitOfWork(hub_engine) as uow:
        stored = (await uow.session.execute(select(t.transactions))).mappings().all()
    assert {row["transaction_id"]: tuple(row[c] for c in TRANSACTION_COLUMNS) for row in stored} == patches.transactions


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_the_feeds_one_key_migration_keeps_its_rows_and_still_lists_a_resent_event_once(
    dialect: str, request: pytest.FixtureRequest
) -> None:
    # Migration 0006 (ADR 0068): the feed's key becomes its page order, (customer, time, id).
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "sqlite_url")
    engine = create_engine(url)
    try:
        await upgrade(engine, MIGRATIONS, "0005")
        rows = [
            {"event_id": f"e{i}", "customer_id": f"c{i % 3}", "event_type": "t", "event_us": 1_000 + i,
             "aggregate_type": "customer", "aggregate_id": f"c{i % 3}", "aggregate_version": i, "topic": "x",
             "partition": 0, "offset": i}
            for i in range(7)
        ]  # fmt: skip
        async with UnitOfWork(engine) as uow:
            await bulk_insert(uow.session, customer_events, rows)
            await uow.commit()
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as conn:
            pk = await conn.run_sync(lambda c: inspect(c).get_pk_constraint("dh_customer_events"))
        assert tuple(pk["constrained_columns"]) == FEED_KEY
        async with UnitOfWork(engine) as uow:  # a re-sent event and a new one
            await bulk_insert(
                uow.session, customer_events, [rows[4], {**rows[4], "event_id": "e7"}], skip_conflicts_on=FEED_KEY
            )
            await uow.commit()
        async with UnitOfWork(engine) as uow:
            stored = (await uow.session.execute(select(customer_events.c.event_id))).scalars().all()
        assert sorted(stored) == [f"e{i}" for i in range(8)]
    finally:
        await engine.dispose()
