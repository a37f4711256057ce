"""PostgreSQL engines ping a pooled connection only after it sat idle: a connection killed while
idle is replaced at checkout, and a busy one costs no ping (the caller sees the failure once)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.kit.db import UnitOfWork, create_engine


async def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    async with UnitOfWork(engine) as uow:
        return int(await uow.session.scalar(text("SELECT pg_backend_pid()")))


async def _kill(pg_url: str, pid: int) -> None:
    admin = create_engine(pg_url)
    try:
        async with admin.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await admin.dispose()


async def test_an_idle_connection_killed_meanwhile_is_replaced_at_checkout(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1, ping_after_idle_s=0.0)  # every reuse counts as idle
    try:
        first = await _backend_pid(engine)
        await _kill(pg_url, first)
        assert await _backend_pid(engine) != first  # the ping found it dead: a new connection, no error
    finally:
        await engine.dispose()


async def test_a_busy_connection_is_not_pinged_and_the_pool_recovers_after_one_failure(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1, ping_after_idle_s=3600.0)
    try:
        first = await _backend_pid(engine)
        await _kill(pg_url, first)
        with pytest.raises(DBAPIError) as failed:  # no ping: the query meets the dead connection
            await _backend_pid(engine)
        assert failed.value.connection_invalidated
        assert await _backend_pid(engine) != first  # and the pool moved on to a new one
    finally:
        await engine.dispose()
