"""The kit's Reader answers as a read session does, on PostgreSQL (the pool's asyncpg connection)
and SQLite (a read session), and a connection lost under a read leaves the pool (ADR 0029)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import Reader, is_infrastructure_error, read_sessionmaker
from services.kit.db import create_engine

metadata = MetaData()
items = Table(
    "reader_items",
    metadata,
    Column("item_id", String(32), primary_key=True),
    Column("flag", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("rank", Integer, nullable=False),
)
AT = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
BY_ID = select(items.c.item_id, items.c.flag, items.c.amount, items.c.at).where(items.c.item_id == bindparam("item_id"))
FLAGGED = (
    select(items.c.item_id)
    .where(items.c.flag == bindparam("flag", type_=Boolean), items.c.rank > bindparam("above", type_=Integer))
    .order_by(items.c.rank)
    .limit(2)  # (a value bound in the statement itself)
)


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    engine = create_engine(url, pool_size=2)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            items.insert(),
            [
                {"item_id": f"i{n}", "flag": n % 2 == 0, "amount": None if n == 3 else n * 100, "at": AT, "rank": n}
                for n in range(6)
            ],
        )
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_read_answers_what_a_read_session_answers(engine: AsyncEngine) -> None:
    reader = Reader(engine)
    async with read_sessionmaker(engine)() as session:
        expected = (await session.execute(BY_ID, {"item_id": "i3"})).one()
    for _ in range(2):  # (the second time from the compiled cache)
        row = await reader.first(BY_ID, {"item_id": "i3"})
        assert row is not None
        assert (row[0], row[1], row[2]) == ("i3", False, None) == tuple(expected[:3])
        assert row[3].replace(tzinfo=row[3].tzinfo or UTC) == AT
    assert await reader.first(BY_ID, {"item_id": "nope"}) is None


async def test_parameters_come_with_the_call_and_values_bound_in_the_statement_stay(engine: AsyncEngine) -> None:
    reader = Reader(engine)
    assert [r[0] for r in await reader.all(FLAGGED, {"flag": True, "above": 0})] == ["i2", "i4"]
    assert [r[0] for r in await reader.all(FLAGGED, {"flag": False, "above": 1})] == ["i3", "i5"]
    assert list(await reader.all(FLAGGED, {"flag": True, "above": 9})) == []


async def test_a_connection_killed_under_a_read_fails_once_and_the_pool_moves_on(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1, ping_after_idle_s=3600.0)  # (no ping: the read meets it)
    reader = Reader(engine)
    pid = select(text("pg_backend_pid()"))
    try:
        first = (await reader.first(pid))[0]
        admin = create_engine(pg_url)
        async with admin.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await admin.dispose()
        with pytest.raises(Exception) as failed:
            await reader.first(pid)
        assert is_infrastructure_error(failed.value)  # (the kit answers UNAVAILABLE for it)
        assert (await reader.first(pid))[0] != first  # invalidated: a new connection next time
    finally:
        await engine.dispose()


async def test_an_open_read_session_never_holds_a_writer_up(engine: AsyncEngine) -> None:
    """A read session left open (a cancelled call's, until it is collected) must not keep the
    write lock: on SQLite its transaction begins DEFERRED, not the writers' IMMEDIATE."""
    reads = read_sessionmaker(engine)()
    try:
        assert (await reads.execute(BY_ID, {"item_id": "i1"})).one()[0] == "i1"  # (a transaction is open)
        async with engine.begin() as conn:
            # (SQLite's busy timeout is 30 s: a reader holding the lock shows as this timing out)
            await asyncio.wait_for(conn.execute(items.update().where(items.c.item_id == "i1").values(rank=99)), 5)
        async with read_sessionmaker(engine)() as fresh:
            assert (await fresh.execute(select(items.c.rank).where(items.c.item_id == "i1"))).scalar_one() == 99
    finally:
        await reads.close()
