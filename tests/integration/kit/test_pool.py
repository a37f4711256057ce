"""A PostgreSQL engine keeps the connections it opens, up to twice its ``pool_size`` (ADR 0041):
a burst of concurrent reads reuses the same backends afterwards instead of opening a new one for
every checkout beyond ``pool_size`` and closing it at the return (the overflow churn)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.kit.db import UnitOfWork, create_engine


async def _burst(engine, n: int) -> set[int]:  # type: ignore[no-untyped-def]
    """``n`` units of work at once, each holding its connection until all have one."""
    held = asyncio.Barrier(n)

    async def one() -> int:
        async with UnitOfWork(engine) as uow:
            pid = int(await uow.session.scalar(text("SELECT pg_backend_pid()")))
            await held.wait()
            return pid

    return set(await asyncio.gather(*(one() for _ in range(n))))


async def test_a_burst_beyond_pool_size_keeps_its_connections_for_the_next_one(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=2, ping_after_idle_s=3600.0)
    try:
        first = await _burst(engine, 4)  # twice pool_size: the ceiling, as with overflow before
        assert len(first) == 4
        assert await _burst(engine, 4) == first  # the same four backends, none closed and reopened
        assert engine.sync_engine.pool.checkedin() == 4  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
