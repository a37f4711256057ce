"""In-process projection on SQLite: migrate, apply events in batches, render, read views back."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.synth import SynthEvent
from services.data_hub import store
from services.data_hub.domain import Rules
from services.data_hub.facts import apply_patches
from services.data_hub.fold import fold
from services.data_hub.main import MIGRATIONS
from services.kit.db import UnitOfWork, create_engine
from services.kit.events import ReceivedEvent
from services.kit.migrations import upgrade

T = TypeVar("T")


def interleave(streams: Mapping[str, Sequence[T]], rng: random.Random) -> list[T]:
    """A random merge of the per-key streams that keeps each key's order (as Kafka delivers
    partitions: in order within one, in any order across them)."""
    queues = {k: list(v) for k, v in streams.items() if v}
    merged: list[T] = []
    while queues:
        key = rng.choice(sorted(queues))
        merged.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    return merged


def received(e: SynthEvent) -> ReceivedEvent:
    return e.received()


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
        patches = fold([received(e) for e in events[i : i + batch_size]])
        async with UnitOfWork(engine) as uow:
            tables = store.SETS[set_name] if set_name else await store.active_tables(uow.session)
            await apply_patches(uow.session, tables, patches)
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
