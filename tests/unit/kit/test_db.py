"""services.kit.db: SQLite engine settings, the one-writer lock and the unit of work (SQLite file in tmp_path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.kit.db import EngineLifecycle, UnitOfWork, create_engine, is_sqlite, run_in_uow, write_lock

SCHEMA = (
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id))",
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with eng.begin() as conn:
        for ddl in SCHEMA:
            await conn.execute(text(ddl))
    yield eng
    await eng.dispose()


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT name FROM parent ORDER BY id"))).scalars())


async def insert(session: AsyncSession, name: str) -> None:
    await session.execute(text("INSERT INTO parent (name) VALUES (:n)"), {"n": name})


# --- engine settings ----------------------------------------------------------------------------


async def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    assert str(journal).lower() == "wal"
    assert busy == 30000
    assert foreign_keys == 1
    assert synchronous == 1  # NORMAL


async def test_a_foreign_key_violation_is_refused_by_sqlite(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO child (parent_id) VALUES (999)"))


async def test_sqlite_transactions_begin_immediate(engine: AsyncEngine) -> None:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert seen[0] == "BEGIN IMMEDIATE"


async def test_a_sqlite_engine_creates_the_database_folder(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "db.sqlite"
    eng = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with eng.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await eng.dispose()
    assert path.exists()


async def test_only_sqlite_engines_have_a_write_lock(engine: AsyncEngine) -> None:
    assert is_sqlite(engine)
    assert isinstance(write_lock(engine), asyncio.Lock)
    pg = create_engine("postgresql+asyncpg://user:pw@127.0.0.1:1/none")  # never connects
    try:
        assert not is_sqlite(pg)
        assert write_lock(pg) is None
        # ZT_DATABASE_POOL_SIZE=10: up to 20 connections, all kept once opened (ADR 0041)
        assert pg.sync_engine.pool.size() == 20  # type: ignore[attr-defined]
        assert pg.sync_engine.pool._max_overflow == 0  # type: ignore[attr-defined]
        assert pg.sync_engine.pool._pool.use_lifo  # type: ignore[attr-defined]
    finally:
        await pg.dispose()


# --- unit of work -------------------------------------------------------------------------------


async def test_a_unit_of_work_commits_when_commit_ran(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await insert(uow.session, "kept")
        await uow.commit()
    assert uow.committed
    assert await names(engine) == ["kept"]


async def test_a_unit_of_work_rolls_back_without_commit(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await insert(uow.session, "lost")
    assert not uow.committed
    assert await names(engine) == []


async def test_a_unit_of_work_rolls_back_on_exception_and_re_raises(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with UnitOfWork(engine) as uow:
            await insert(uow.session, "lost")
            raise ValueError("boom")
    assert await names(engine) == []
    lock = write_lock(engine)
    assert lock is not None and not lock.locked()  # released on the error path too


async def test_after_commit_callbacks_run_in_order_once_the_data_is_committed(engine: AsyncEngine) -> None:
    seen: list[object] = []
    uow = UnitOfWork(
        engine, after_commit=[lambda: seen.append(("first", uow.committed)), lambda: seen.append("second")]
    )
    async with uow:
        await insert(uow.session, "a")
        await uow.commit()
        assert seen == []  # not at commit(), only when the unit of work ends
    assert seen == [("first", True), "second"]
    assert await names(engine) == ["a"]


async def test_after_commit_callbacks_do_not_run_without_commit(engine: AsyncEngine) -> None:
    seen: list[str] = []
    async with UnitOfWork(engine, after_commit=[lambda: seen.append("x")]) as uow:
        await insert(uow.session, "a")
    with pytest.raises(RuntimeError):
        async with UnitOfWork(engine, after_commit=[lambda: seen.append("y")]) as uow:
            await insert(uow.session, "b")
            raise RuntimeError("before commit")
    assert seen == []


async def test_after_commit_callbacks_do_not_run_when_the_commit_fails(engine: AsyncEngine) -> None:
    seen: list[str] = []
    with pytest.raises(IntegrityError):
        async with UnitOfWork(engine, after_commit=[lambda: seen.append("x")]) as uow:
            await uow.session.execute(text("INSERT INTO child (parent_id) VALUES (999)"))
            await uow.commit()
    assert seen == []
    assert not uow.committed


async def test_the_session_is_only_available_inside_async_with(engine: AsyncEngine) -> None:
    uow = UnitOfWork(engine)
    with pytest.raises(RuntimeError, match="outside"):
        _ = uow.session
    async with uow:
        assert uow.session is not None
    with pytest.raises(RuntimeError, match="outside"):
        _ = uow.session


async def test_sqlite_units_of_work_serialize_one_writer_at_a_time(engine: AsyncEngine) -> None:
    order: list[str] = []
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with UnitOfWork(engine) as uow:
            order.append("first entered")
            await insert(uow.session, "first")
            first_inside.set()
            await release_first.wait()
            await uow.commit()
        order.append("first exited")

    async def second() -> None:
        await first_inside.wait()
        order.append("second waiting")
        async with UnitOfWork(engine) as uow:
            order.append("second entered")
            await insert(uow.session, "second")
            await uow.commit()

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_inside.wait()
    await asyncio.sleep(0.05)  # ample time for the second to get in, were it not blocked
    assert order == ["first entered", "second waiting"]
    release_first.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert order == ["first entered", "second waiting", "first exited", "second entered"]
    assert await names(engine) == ["first", "second"]


async def test_run_in_uow_commits_and_returns_the_result(engine: AsyncEngine) -> None:
    seen: list[str] = []

    async def work(session: AsyncSession) -> str:
        await insert(session, "via run_in_uow")
        return "done"

    assert await run_in_uow(engine, work, after_commit=[lambda: seen.append("woken")]) == "done"
    assert await names(engine) == ["via run_in_uow"]
    assert seen == ["woken"]


async def test_run_in_uow_rolls_back_when_the_work_raises(engine: AsyncEngine) -> None:
    async def work(session: AsyncSession) -> None:
        await insert(session, "lost")
        raise LookupError("nope")

    with pytest.raises(LookupError):
        await run_in_uow(engine, work)
    assert await names(engine) == []


async def test_engine_lifecycle_stop_disposes_the_pool(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    closed: list[object] = []
    event.listen(eng.sync_engine, "close", lambda dbapi_conn, _record: closed.append(dbapi_conn))
    lifecycle = EngineLifecycle(eng)
    await lifecycle.start()
    async with eng.connect() as conn:
        await conn.execute(text("SELECT 1"))
    old_pool = eng.sync_engine.pool
    assert old_pool.checkedin() == 1  # type: ignore[attr-defined]
    await lifecycle.stop()
    assert len(closed) == 1  # the pooled connection was closed
    assert eng.sync_engine.pool is not old_pool
