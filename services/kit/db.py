"""Async SQLAlchemy 2 engines (SQLite for dev, PostgreSQL in production) and the unit of work.

SQLite: WAL, a busy timeout, ``BEGIN IMMEDIATE`` (a writer waits instead of failing on lock
upgrade) and one writer per process (an asyncio lock). PostgreSQL: asyncpg with a bounded pool.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

_write_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

#: A 64-bit auto-increment key that SQLite also auto-increments (it only does for INTEGER).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base for tables that are not tied to one service (outbox, inbox)."""


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


def one_of(session: AsyncSession, column: Any, values: Iterable[Any]) -> Any:
    """``column IN (values)`` with SQL that does not depend on how many values there are.

    On PostgreSQL ``column = ANY(:array)``: one parameter, so the statement is compiled once and
    asyncpg's prepared statement is reused. An IN list renders a new statement for every length,
    and asyncpg prepares each one again (an extra round trip, and server-side planning, per batch).
    """
    values = list(values)
    if is_postgres(session):
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine with the right settings for its backend (call at start-up, not import)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
    else:
        engine = create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
        )
    _instrument(engine)
    if is_sqlite(engine):
        _write_locks[engine.sync_engine] = asyncio.Lock()
    return engine


def write_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """SQLite's one-writer-per-process lock (None for PostgreSQL)."""
    return _write_locks.get(engine.sync_engine)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions (so BEGIN IMMEDIATE below is ours).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _instrument(engine: AsyncEngine) -> None:
    """Trace this engine's statements (not the parameters, which may hold PII).

    ``EngineTracer`` per engine rather than ``SQLAlchemyInstrumentor().instrument(engine=...)``:
    the instrumentor is a process-wide singleton that ignores every engine after the first.
    """
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    usage = metrics.get_meter("zhongtai.db").create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="connections by state"
    )
    EngineTracer(trace.get_tracer("zhongtai.db"), engine.sync_engine, usage, enable_commenter=False)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class EngineLifecycle:
    """Disposes the engine's pool at shutdown (the last component to stop)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.engine.dispose()


class UnitOfWork:
    """One use case, one transaction: ``async with uow:`` rolls back unless ``commit()`` ran.

    After a successful commit the ``after_commit`` callbacks run (e.g. wake the outbox relay).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        after_commit: list[Callable[[], None]] | None = None,
        factory: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._engine = engine
        self._factory = factory or sessionmaker(engine)
        self._after_commit = list(after_commit or [])
        self._lock = write_lock(engine)
        self._session: AsyncSession | None = None
        self.committed = False

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        if self._lock is not None:
            await self._lock.acquire()
        self._session = self._factory()
        self.committed = False
        return self

    async def commit(self) -> None:
        await self.session.commit()
        self.committed = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                if not self.committed:
                    await session.rollback()
                await session.close()
        finally:
            if self._lock is not None:
                self._lock.release()
        if self.committed and exc_type is None:
            for callback in self._after_commit:
                callback()


async def run_in_uow(engine: AsyncEngine, work: Callable[[AsyncSession], Awaitable[Any]], **kwargs: Any) -> Any:
    """Run ``work(session)`` in its own unit of work and commit."""
    async with UnitOfWork(engine, **kwargs) as uow:
        result = await work(uow.session)
        await uow.commit()
    return result


# ------------------------------------------------------------------------------------------
# Bulk statements: one set-based statement per batch on PostgreSQL, executemany elsewhere
# ------------------------------------------------------------------------------------------


class _BindColumns:
    """``src.c.name`` → ``bindparam(name)``: the executemany form of a bulk statement."""

    def __getattr__(self, name: str) -> Any:
        return bindparam(name)


class _BindSource:
    c = _BindColumns()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
    raise TypeError(f"cannot send {type(value).__name__} in a bulk statement")


def _rows_source(rows: Sequence[dict[str, Any]], types: dict[str, Any]) -> Any:
    """``json_to_recordset(:rows) AS src(a type, …)``: the rows as ONE JSON parameter.

    Serialising with orjson is C-speed (~2 µs a row); the alternatives cost the client far more
    CPU: an executemany binds and executes row by row, and ``unnest`` over one array per column
    has asyncpg type-check every element (~6–10 µs a row)."""
    names = [(str(name), name) for name in types]  # (orjson wants exact str keys, not quoted_name)
    payload = orjson.dumps([{key: r[name] for key, name in names} for r in rows], default=_json_default).decode()
    return (
        func.json_to_recordset(cast(bindparam("bulk_rows", payload, type_=Text), postgresql.JSON))
        .table_valued(*(column(name, type_) for name, type_ in types.items()))
        .render_derived(name="src", with_types=True)
    )


def _insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    """The dialect's INSERT of these rows (every row with the same keys) and its parameters."""
    dialect = session.bind.dialect.name
    if dialect == "postgresql":
        columns = list(rows[0])
        src = _rows_source(rows, {c: table.c[c].type for c in columns})
        return postgresql.insert(table).from_select(columns, select(*(src.c[c] for c in columns))), None
    if dialect == "sqlite":
        return sqlite.insert(table), list(rows)
    raise RuntimeError(f"unsupported database {dialect}")


async def bulk_insert(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts_on: Sequence[str] = ()
) -> None:
    """INSERT many rows (every row with the same keys). On PostgreSQL one
    ``INSERT … SELECT … FROM json_to_recordset(:rows)``: one parameter and one plan for thousands
    of rows, where an executemany binds and executes each row. ``skip_conflicts_on`` (a unique key) makes
    conflicting rows no-ops."""
    if not rows:
        return
    stmt, params = _insert_rows(session, table, rows)
    if skip_conflicts_on:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
    await session.execute(stmt, params)


async def bulk_upsert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: Sequence[str],
    update_existing: Callable[[Any], dict[str, Any]],
) -> None:
    """INSERT many rows as :func:`bulk_insert`; a row whose ``key`` exists is updated instead, with
    ``update_existing(excluded)`` (``excluded.<column>``: the row that was to be inserted)."""
    if not rows:
        return
    stmt, params = _insert_rows(session, table, rows)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=list(key), set_=update_existing(stmt.excluded)), params
    )


async def bulk_update(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    types: dict[str, Any],
    *,
    where: Callable[[Any], list[Any]],
    values: Callable[[Any], dict[str, Any]],
) -> None:
    """UPDATE one row per parameter dict. ``types`` names the parameters (not column names:
    SQLAlchemy reserves those) with their SQL types; ``where(src)`` and ``values(src)`` build the
    statement from ``src.c.<parameter>``. On PostgreSQL one ``UPDATE … FROM json_to_recordset(…)``;
    elsewhere an executemany of the same statement with bound parameters."""
    if not rows:
        return
    if session.bind.dialect.name == "postgresql":
        src = _rows_source(rows, types)
        await session.execute(update(table).where(*where(src)).values(**values(src)))
        return
    bound = _BindSource()
    await session.execute(update(table).where(*where(bound)).values(**values(bound)), list(rows))
