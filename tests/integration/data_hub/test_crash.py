"""SIGKILL the hub mid-stream under load (real Kafka + PostgreSQL): views converge, nothing applied twice."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from devtools.synth import Synth
from services.data_hub import store
from services.kit.consumer import AggregateVersion, InboxRow
from services.kit.db import UnitOfWork, create_engine

from .conftest import caught_up, converge, hub, namespace, send, wait_until
from .test_hub import reference


async def count(engine, stmt) -> int:  # type: ignore[no-untyped-def]
    async with UnitOfWork(engine) as uow:
        return int((await uow.session.execute(stmt)).scalar_one())


async def test_hub_killed_mid_stream_converges_with_no_event_applied_twice(kafka_server, pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"k{uuid.uuid4().hex[:6]}"
    group = f"dh-crash-{uuid.uuid4().hex[:6]}"
    events = Synth(seed=31, customers=80, months=6, prefix=prefix).events()
    ids = {e.event_id for e in events}
    txns = sum(1 for e in events if e.payload.DESCRIPTOR.name == "TransactionPosted")
    engine = create_engine(pg_url)
    ns = namespace()
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns, group=group, ZT_DATAHUB_MAX_RECORDS="200").start()
    try:
        producing = asyncio.create_task(send(events, bootstrap, ns))
        # Progress: the aggregates whose versions the hub stored (every event is versioned: the
        # hub keeps no inbox row for such an event, its aggregate's version is the duplicate check,
        # ADR 0049).
        newest: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e.aggregate_type, e.aggregate_id)
            newest[key] = max(newest.get(key, 0), e.version)
        v = AggregateVersion
        mine = v.aggregate_id.in_({a for _, a in newest})
        stored = select(func.count()).select_from(AggregateVersion).where(mine)

        async def under_way() -> bool:
            return await count(engine, stored) >= len(newest) // 4

        await wait_until(under_way, 60, "a quarter of the stream applied")
        proc.kill()  # SIGKILL: no shutdown hooks, a batch may be half-done (its transaction rolls back)
        at_kill = await count(engine, stored)
        assert at_kill < len(newest), "the hub finished before the kill: make the stream longer"
        await producing
        proc.start()
        expected = await reference(events, tmp_path, prefix)
        await converge(engine, prefix, expected, timeout=120)
        await wait_until(lambda: caught_up(bootstrap, group, ns), 60, "the group to commit every offset")
        # Every aggregate is at its newest version, no event of the stream is in the inbox (none
        # was dead-lettered), and every transaction exists once in the projection.
        async with UnitOfWork(engine) as uow:
            got = (await uow.session.execute(select(v.aggregate_type, v.aggregate_id, v.version).where(mine))).all()
            t = await store.active_tables(uow.session)
        assert {(a, b): n for a, b, n in got} == newest
        assert await count(engine, select(func.count()).select_from(InboxRow).where(InboxRow.event_id.in_(ids))) == 0
        own_txns = (
            select(func.count()).select_from(t.transactions).where(t.transactions.c.customer_id.like(f"{prefix}-%"))
        )
        assert await count(engine, own_txns) == txns
        log = proc.log_text()
        assert "event dead-lettered" not in log
    finally:
        proc.stop()
        await engine.dispose()
