"""The inbox consumer's per-batch lookup: which events were applied, the stored aggregate versions.

Versions are keyed by (aggregate type, aggregate id): the same id under two types is two
aggregates. On PostgreSQL the lookup must use that key even when the table is large and the
prepared statement runs with a generic plan (what asyncpg's statement cache leads to after five
executions) — matching the id alone scanned the whole table for every batch.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import empty_pb2
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql

from services.kit.db import UnitOfWork
from services.kit.events import ReceivedEvent
from services.kit.inbox import AggregateVersion, InboxRow, _load, _load_query

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def event(event_id: str, aggregate_type: str, aggregate_id: str, version: int) -> ReceivedEvent:
    return ReceivedEvent(
        id=event_id, type=f"bank.{aggregate_type}.changed", source="test", subject=aggregate_id, time=NOW,
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, version=version, message=empty_pb2.Empty(),
    )  # fmt: skip


async def test_versions_are_found_by_type_and_id_and_seen_events_by_id(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    async with UnitOfWork(engine) as uow:
        await uow.session.execute(
            insert(AggregateVersion),
            [
                {"aggregate_type": "customer", "aggregate_id": "x", "version": 5},
                {"aggregate_type": "subscription", "aggregate_id": "x", "version": 1},
                {"aggregate_type": "subscription", "aggregate_id": "y", "version": 3},
            ],
        )
        await uow.session.execute(
            insert(InboxRow),
            [{"event_id": "e-old", "event_type": "t", "topic": "t", "partition": 0, "offset": 0,
              "status": "applied", "processed_at": NOW}],
        )  # fmt: skip
        await uow.commit()
    batch_events = [
        event("e-old", "subscription", "x", 1),
        event("e-new", "subscription", "x", 2),
        event("e-z", "product", "x", 1),
        event("e-y", "subscription", "y", 4),
    ]
    async with UnitOfWork(engine) as uow:
        batch = await _load(uow.session, batch_events)
    assert batch.seen == {"e-old": True, "e-new": False, "e-z": False, "e-y": False}
    # customer/x's version 5 is not subscription/x's: each pair gets its own stored version.
    assert batch.stored == {("subscription", "x"): 1, ("product", "x"): None, ("subscription", "y"): 3}


async def test_on_postgresql_the_version_lookup_uses_the_key_under_a_generic_plan(pg_kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = pg_kit_db
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO aggregate_versions SELECT 'customer', 'c-' || g, 1 FROM generate_series(1, 50000) g")
        )
        await conn.execute(text("ANALYZE aggregate_versions"))
    query = _load_query("postgresql", True, True)
    sql = str(query.compile(dialect=postgresql.asyncpg.dialect()))
    # The same SQL as a server-side prepared statement, planned once for any parameters.
    async with engine.connect() as conn:
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute(f"PREPARE zt_load AS {sql}")
        rows = await driver.fetch("EXPLAIN EXECUTE zt_load('{e-1}', '{customer}', '{c-7}')")
        plan = "\n".join(row[0] for row in rows)
        await driver.execute("DEALLOCATE zt_load")
    assert "aggregate_versions_pkey" in plan, plan
    assert "Seq Scan on aggregate_versions" not in plan, plan
