"""In-process projection on SQLite: migrate, apply events in batches, render, read views back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.synth import SynthEvent
from services.data_hub import store
from services.data_hub.domain import Rules
from services.data_hub.main import MIGRATIONS
from services.kit.db import UnitOfWork, create_engine
from services.kit.events import ReceivedEvent
from services.kit.migrations import upgrade


def received(e: SynthEvent) -> ReceivedEvent:
    return ReceivedEvent(
        id=e.event_id,
        type=e.payload.DESCRIPTOR.full_name,
        source=e.source,
        subject=e.aggregate_id,
        time=e.time,
        aggregate_type=e.aggregate_type,
        aggregate_id=e.aggregate_id,
        version=e.version,
        message=e.payload,
    )


async def projection(path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine, MIGRATIONS)
    return engine


async def apply(
    engine: AsyncEngine,
    events: Sequence[SynthEvent],
    *,
    batch_size: int = 50,
    rules: Rules | None = None,
    set_name: str | None = None,
) -> None:
    """Apply in batches (each one transaction), rendering after each batch like the live worker."""
    rules = rules or Rules()
    for i in range(0, len(events), batch_size):
        batch = store.Batch()
        for e in events[i : i + batch_size]:
            batch.add(received(e))
        async with UnitOfWork(engine) as uow:
            tables = store.SETS[set_name] if set_name else await store.active_tables(uow.session)
            await store.apply_batch(uow.session, tables, batch)
            await uow.commit()
        await render_all(engine, rules, set_name=set_name)


async def render_all(engine: AsyncEngine, rules: Rules, *, set_name: str | None = None) -> int:
    changed = 0
    while True:
        async with UnitOfWork(engine) as uow:
            tables = store.SETS[set_name] if set_name else await store.active_tables(uow.session)
            rendered, ch = await store.materialize(uow.session, tables, rules, limit=200)
            await uow.commit()
        changed += ch
        if not rendered:
            return changed


async def docs(engine: AsyncEngine, set_name: str | None = None) -> dict[str, bytes]:
    async with UnitOfWork(engine) as uow:
        tables = store.SETS[set_name] if set_name else await store.active_tables(uow.session)
        return await store.all_docs(uow.session, tables)


def ids(events: Iterable[SynthEvent]) -> list[str]:
    return [e.event_id for e in events]
