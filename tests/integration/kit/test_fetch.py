"""The kit's ``fetch`` answers as the session does, in the session's transaction, on PostgreSQL
(the transaction's asyncpg connection) and SQLite (the session), and raises SQLAlchemy's errors
(ADR 0045)."""

from __future__ import annotations

import pytest
from sqlalchemy import Boolean, Integer, bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.kit import fetch, in_list
from services.kit.db import dialect_of
from tests.integration.kit.test_reader import AT, engine, items

__all__ = ["engine"]  # (the fixture: the Reader's table and rows, on PostgreSQL and SQLite)

rows = items
INSERT_ONE = insert(rows).values(
    item_id=bindparam("row_id"), flag=bindparam("flag", type_=Boolean), rank=bindparam("rank", type_=Integer), at=AT
)


def _by_ids(dialect: str) -> object:
    return (
        select(rows.c.item_id.label("row_id"), rows.c.flag, rows.c.rank)
        .where(in_list(dialect, rows.c.item_id, "ids"), rows.c.rank > 0)  # (0: a value of the statement's own)
        .order_by(rows.c.rank)
    )


async def test_rows_by_name_as_the_session_reads_them_inside_its_transaction(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        stmt = _by_ids(dialect_of(session))
        expected = (await session.execute(stmt, {"ids": ["i0", "i1", "i4"]})).mappings().all()  # (begins)
        for _ in range(2):  # (the second time from the compiled cache)
            got = await fetch(session, stmt, {"ids": ["i0", "i1", "i4"]})
            assert (
                [dict(r) for r in got]
                == [dict(r) for r in expected]
                == [
                    {"row_id": "i1", "flag": False, "rank": 1},
                    {"row_id": "i4", "flag": True, "rank": 4},
                ]
            )
        # it sees the transaction's own uncommitted write, and the write rolls back with it
        await session.execute(INSERT_ONE, {"row_id": "r9", "flag": True, "rank": 9})
        assert [r["row_id"] for r in await fetch(session, stmt, {"ids": ["r9"]})] == ["r9"]
        await session.rollback()
    async with AsyncSession(engine) as session:
        assert await fetch(session, _by_ids(dialect_of(session)), {"ids": ["r9"]}) == []


async def test_the_first_statement_of_a_transaction_begins_it(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        async with session.begin():
            assert await fetch(session, INSERT_ONE, {"row_id": "r8", "flag": True, "rank": 8}) == []
            await session.rollback()
        async with session.begin():
            assert await fetch(session, _by_ids(dialect_of(session)), {"ids": ["r8"]}) == []
            await fetch(session, INSERT_ONE, {"row_id": "r8", "flag": True, "rank": 8})
        assert [r["rank"] for r in await fetch(session, _by_ids(dialect_of(session)), {"ids": ["r8"]})] == [8]


async def test_a_unique_violation_is_sqlalchemys_integrity_error(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        async with session.begin():
            await session.execute(select(rows.c.item_id).limit(1))  # (the transaction has begun)
            with pytest.raises(IntegrityError):
                await fetch(session, INSERT_ONE, {"row_id": "i1", "flag": True, "rank": 1})
            await session.rollback()
        async with session.begin():  # the session goes on as after any failed statement
            assert len(await fetch(session, _by_ids(dialect_of(session)), {"ids": ["i1", "i2"]})) == 2


async def test_a_listener_to_the_statement_events_sees_every_statement(engine: AsyncEngine) -> None:
    seen: list[str] = []

    def _seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", _seen)
    try:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(select(rows.c.item_id).limit(1))
            await fetch(session, _by_ids(dialect_of(session)), {"ids": ["i1"]})
            assert await fetch(session, INSERT_ONE, {"row_id": "r7", "flag": False, "rank": 7}) == []
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", _seen)
    assert [s.split()[0] for s in seen if not s.startswith("BEGIN")] == ["SELECT", "SELECT", "INSERT"]
