"""Async SQLAlchemy 2 engines (SQLite for dev, PostgreSQL in production) and the unit of work.

SQLite: WAL, a busy timeout, ``BEGIN IMMEDIATE`` (a writer waits instead of failing on lock
upgrade) and one writer per process (an asyncio lock). PostgreSQL: asyncpg with a bounded pool.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    any_,
    bindparam,
    event,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

_write_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
#: Engines whose statements get a span each (``trace_statements``): reads keep going through them.
_traced: weakref.WeakSet[Any] = weakref.WeakSet()

#: A 64-bit auto-increment key that SQLite also auto-increments (it only does for INTEGER).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base for tables that are not tied to one service (outbox, inbox)."""


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def dialect_of(session: AsyncSession) -> str:
    """The session's database dialect name (``postgresql``, ``sqlite``)."""
    return str(session.bind.dialect.name)


def is_postgres(session: AsyncSession) -> bool:
    return dialect_of(session) == "postgresql"


def in_list(dialect: str, column: Any, name: str) -> Any:
    """``column IN (:name)`` for a statement built once and reused: the list comes with each
    execution (``{name: [...]}``).

    On PostgreSQL ``column = ANY(:name)``: one array parameter, so one SQL string whatever the
    length, and asyncpg's prepared statement is reused. An IN list renders a new statement for
    every length, which asyncpg prepares again (an extra round trip and server-side planning per
    batch); elsewhere (SQLite) an expanding IN."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


#: Connections a PostgreSQL engine keeps per unit of ``pool_size`` (the same ceiling as the
#: ``pool_size`` + ``pool_size`` overflow before ADR 0041, now kept instead of churned).
KEPT_PER_POOL_SIZE = 2


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    ping_after_idle_s: float = 5.0,
    trace_statements: bool = False,
) -> AsyncEngine:
    """An async engine with the right settings for its backend (call at start-up, not import).

    PostgreSQL: up to ``2 × pool_size`` connections, each kept once opened and handed out most
    recently used first (no overflow: an overflow connection was opened for one checkout and
    closed at its return — a new backend, asyncpg's set-up and SQLAlchemy's codecs for a ~1 ms
    read; ADR 0041); a pooled connection that sat idle for ``ping_after_idle_s`` is pinged at
    checkout (see :func:`_ping_idle_connections`). ``trace_statements``
    (``ZT_DB_TRACE_STATEMENTS``): a span per statement and the pool-usage metric, see
    :func:`_instrument`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
    else:
        engine = create_async_engine(
            url,
            echo=echo,
            pool_size=KEPT_PER_POOL_SIZE * pool_size,
            max_overflow=0,
            pool_use_lifo=True,  # (the most recently used first: the hot set stays small, ADR 0041)
            pool_recycle=1800,
        )
        _ping_idle_connections(engine, ping_after_idle_s)
    if trace_statements:
        _instrument(engine)
        _traced.add(engine.sync_engine)
    if is_sqlite(engine):
        _write_locks[engine.sync_engine] = asyncio.Lock()
    return engine


def _ping_idle_connections(engine: AsyncEngine, idle_s: float) -> None:
    """``pool_pre_ping``, but only for connections that sat idle in the pool for ``idle_s``.

    asyncpg's ping is three round trips (BEGIN, an empty query, ROLLBACK); pre-pinging every
    checkout added them to every unit of work — six per live batch of the data hub. A connection
    that was in use seconds ago is as likely to be alive as a ping would say (a failover between
    the ping and the query breaks it either way, and that error reaches the caller, who retries);
    one that sat idle, e.g. across a database restart, is checked. A failed ping invalidates the
    whole pool, as ``pool_pre_ping`` does, and the checkout continues on a new connection.
    """
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _checked_in(dbapi_conn: Any, record: Any) -> None:
        record.info["zt_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("zt_idle_since", None)
        if since is None or time.monotonic() - since < idle_s:
            return  # a new connection, or one in use moments ago
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_conn, None):
                raise sa_exc.InvalidatePoolError() from error
            raise


def traces_statements(engine: AsyncEngine) -> bool:
    """True if this engine was created with a span per statement (``trace_statements``)."""
    return engine.sync_engine in _traced


def on_driver(engine: AsyncEngine) -> bool:
    """True if the kit may send this engine's hot statements on the pool's asyncpg connection
    itself (the Reader, the driver writes, the relay's round): PostgreSQL through asyncpg, and no
    span per statement (those are SQLAlchemy's statement events, so such an engine keeps its path)."""
    return not is_sqlite(engine) and engine.dialect.driver == "asyncpg" and not traces_statements(engine)


def write_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """SQLite's one-writer-per-process lock (None for PostgreSQL)."""
    return _write_locks.get(engine.sync_engine)


#: Execution option of ``read_sessionmaker``'s SQLite engine: its transactions begin DEFERRED.
_SQLITE_READS = "zt_sqlite_reads"


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
        # A read session's transaction takes WAL's read snapshot only (``BEGIN``): with IMMEDIATE
        # it held the one write lock, so a reader held every writer up for the busy timeout
        # whenever its session was not closed at once (a cancelled call, until collected).
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_SQLITE_READS) else "BEGIN IMMEDIATE")


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


def read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads that write nothing: on PostgreSQL each statement runs on its own
    (autocommit), without the BEGIN and ROLLBACK round trips a session otherwise wraps around it.

    Same answers: at PostgreSQL's READ COMMITTED (our isolation level) every statement takes its
    own snapshot inside a transaction too, so a transaction around reads changes nothing they
    see; it only costs two round trips (ADR 0026). On SQLite they are sessions whose transactions
    begin ``DEFERRED`` (a WAL read snapshot, never the write lock the kit's ``BEGIN IMMEDIATE``
    takes), so a reader never holds a writer up. Never write through these.
    """
    if is_sqlite(engine):
        return sessionmaker(engine.execution_options(**{_SQLITE_READS: True}))
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False, autoflush=False
    )


class EngineLifecycle:
    """Disposes the engine's pool at shutdown (the last component to stop)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.engine.dispose()


#: ``session.info`` key: this unit of work runs ``after_commit`` callbacks (the outbox reads it).
WAKES_AFTER_COMMIT = "zt_wakes_after_commit"
#: ``session.info`` key: the writes ``services.kit.bulk.defer_write`` put off, in order.
_DEFERRED = "zt_deferred_writes"


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
        self._session.info[WAKES_AFTER_COMMIT] = bool(self._after_commit)
        self.committed = False
        return self

    async def commit(self) -> None:
        if self.session.info.get(_DEFERRED):
            from services.kit.bulk import run_deferred  # (bulk → fetch → reads → this module)

            await run_deferred(self.session)
        await self.session.commit()
        self.committed = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                session.info.pop(_DEFERRED, None)  # (rolled back with the rest, if not run)
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
