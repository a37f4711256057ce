"""Async SQLAlchemy 2 engines (SQLite for dev, PostgreSQL in production) and the unit of work.

SQLite: WAL, a busy timeout, ``BEGIN IMMEDIATE`` (a writer waits instead of failing on lock
upgrade) and one writer per process (an asyncio lock). PostgreSQL: asyncpg with a bounded pool.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import FunctionType, TracebackType
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    event,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeEngine

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


def read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads that write nothing: on PostgreSQL each statement runs on its own
    (autocommit), without the BEGIN and ROLLBACK round trips a session otherwise wraps around it.

    Same answers: at PostgreSQL's READ COMMITTED (our isolation level) every statement takes its
    own snapshot inside a transaction too, so a transaction around reads changes nothing they
    see; it only costs two round trips (ADR 0026). SQLite keeps ordinary sessions (its
    transactions are the kit's ``BEGIN IMMEDIATE`` and WAL snapshots). Never write through these.
    """
    if is_sqlite(engine):
        return sessionmaker(engine)
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


def _json_rows(rows: Sequence[dict[str, Any]], names: Iterable[Any]) -> str:
    """The rows as one JSON array (orjson: C speed, ~2 µs a row); bytes in bytea's hex form."""
    names = list(names)
    first = rows[0] if rows else {}
    if len(first) == len(names) and all(type(k) is str for k in first) and all(n in first for n in names):
        # The rows hold exactly these keys (as the bulk helpers require): dump them as they are.
        return orjson.dumps(rows, default=_json_default).decode()
    keys = [(str(name), name) for name in names]  # (orjson wants exact str keys, not quoted_name)
    return orjson.dumps([{key: r[name] for key, name in keys} for r in rows], default=_json_default).decode()


def _rows_source(types: dict[str, Any], param: str = "bulk_rows") -> Any:
    """``json_to_recordset(:bulk_rows) AS src(a type, …)`` (or ``:<param>``): the rows come as ONE
    JSON parameter (see :func:`_json_rows`), so one statement and one plan serve any number of rows.

    The alternatives cost the client far more CPU: an executemany binds and executes row by row,
    and ``unnest`` over one array per column has asyncpg type-check every element (~6–10 µs a row).
    """
    return (
        func.json_to_recordset(cast(bindparam(param, type_=Text), postgresql.JSON))
        .table_valued(*(column(name, type_) for name, type_ in types.items()))
        .render_derived(name="src", with_types=True)
    )


class _Uncacheable(Exception):
    pass


#: What :func:`_shape` keeps as it is: values, and (by identity) tables, columns and types.
_VALUES = frozenset((type(None), str, int, float, bool))
_AS_IS = (Table, Column, TypeEngine, str, int, float, bool)  # (and subclasses: quoted_name, IntEnum, …)


def _shape(value: Any, depth: int = 0) -> Any:
    """A hashable stand-in for what a statement builder captured, or :class:`_Uncacheable`.

    Tables, columns and types hash by identity (and the key keeps them alive, so an identity is
    never reused for another object while cached); functions by their code and captured values.
    Anything else (a list, a statement with bound values) makes the statement uncacheable.
    (Exact types first: each key is taken on every bulk statement of a live batch, and an
    ``isinstance`` against SQLAlchemy's classes costs ~1 µs — a ``str | int | …`` union built in
    the call cost ~8.)"""
    kind = type(value)
    if kind in _VALUES:
        return value
    if kind is tuple:
        return tuple(_shape(v, depth) for v in value)
    if kind is FunctionType and depth < 4:
        return (value.__code__, tuple(_shape(cell.cell_contents, depth + 1) for cell in value.__closure__ or ()))
    if isinstance(value, _AS_IS):
        return value
    raise _Uncacheable


#: Built bulk statements by their shape: a statement object reused keeps SQLAlchemy's memoized
#: cache key and compiled form (an UPDATE); an INSERT's compiled SQL (PostgreSQL's INSERT is not
#: cacheable by SQLAlchemy: it would be compiled again for every batch, ~1 ms each).
_statements: dict[tuple[Any, ...], Any] = {}
_STATEMENTS_MAX = 512


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    try:
        hash_key: tuple[Any, ...] | None = tuple(_shape(part) for part in key)
    except _Uncacheable:
        hash_key = None
    if hash_key is None:
        return build()
    found = _statements.get(hash_key)
    if found is None:
        if len(_statements) >= _STATEMENTS_MAX:
            _statements.clear()
        found = _statements[hash_key] = build()
    return found


async def _pg_insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    finish: Callable[[Any], Any],
    shape: tuple[Any, ...],
    driver: bool = False,
) -> None:
    """``INSERT … SELECT … FROM json_to_recordset(:bulk_rows)``, finished by ``finish(stmt)``
    (ON CONFLICT …), compiled once per shape and sent with the rows as its one parameter;
    ``driver``: through :func:`services.kit.fetch.fetch` (as :func:`bulk_update`'s)."""
    columns = tuple(rows[0])
    dialect = session.bind.dialect

    def build() -> tuple[Any, str, bool]:
        src = _rows_source({c: table.c[c].type for c in columns})
        stmt = finish(postgresql.insert(table).from_select(columns, select(*(src.c[c] for c in columns))))
        compiled = stmt.compile(dialect=dialect)
        return stmt, str(compiled), list(compiled.positiontup or ()) == ["bulk_rows"]

    stmt, sql, plain = _cached(("insert", dialect.name, table, columns, *shape), build)
    if not plain:  # (a builder that binds values of its own: run it as a statement)
        raise RuntimeError(f"bulk insert into {table.name}: the statement binds more than the rows")
    if driver:
        from services.kit.fetch import fetch  # (fetch → reads → this module)

        await fetch(session, stmt, {"bulk_rows": _json_rows(rows, columns)})
        return
    conn = await session.connection()
    await conn.exec_driver_sql(sql, (_json_rows(rows, columns),))


async def bulk_insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_conflicts_on: Sequence[str] = (),
    driver: bool = False,
) -> None:
    """INSERT many rows (every row with the same keys). On PostgreSQL one
    ``INSERT … SELECT … FROM json_to_recordset(:rows)``: one parameter and one plan for thousands
    of rows, where an executemany binds and executes each row. ``skip_conflicts_on`` (a unique key) makes
    conflicting rows no-ops. ``driver``: on PostgreSQL in a transaction, run by asyncpg directly
    (as :func:`bulk_update`'s)."""
    if not rows:
        return
    conflict = list(skip_conflicts_on)
    if is_postgres(session):

        def finish(stmt: Any) -> Any:
            return stmt.on_conflict_do_nothing(index_elements=conflict) if conflict else stmt

        await _pg_insert(session, table, rows, finish, ("skip", tuple(conflict)), driver)
        return
    stmt = sqlite.insert(table)
    if conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    await session.execute(stmt, list(rows))


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
    keys = list(key)

    def finish(stmt: Any) -> Any:
        return stmt.on_conflict_do_update(index_elements=keys, set_=update_existing(stmt.excluded))

    if is_postgres(session):
        await _pg_insert(session, table, rows, finish, ("upsert", tuple(keys), update_existing))
        return
    await session.execute(finish(sqlite.insert(table)), list(rows))


def bulk_update_statement(
    table: Table,
    rows: Sequence[dict[str, Any]],
    types: dict[str, Any],
    *,
    where: Callable[[Any], list[Any]],
    values: Callable[[Any], dict[str, Any]],
    params: dict[str, Any] | None = None,
    param: str = "bulk_rows",
) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL's :func:`bulk_update`: its ``UPDATE … FROM json_to_recordset(…)`` (built once per
    shape) and the parameters to run it with, for a caller that runs it on its own connection or
    with others (:func:`bulk_writes`; ``param`` names its rows' parameter)."""

    def build() -> Any:
        src = _rows_source(types, param)
        return update(table).where(*where(src)).values(**values(src))

    stmt = _cached(("update", table, tuple(types.items()), where, values, param), build)
    return stmt, {**(params or {}), param: _json_rows(rows, types)}


def bulk_insert_statement(
    table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts_on: Sequence[str] = (), param: str = "bulk_rows"
) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL's :func:`bulk_insert` as a statement (built once per shape) and its parameters,
    for :func:`bulk_writes` (``param`` names its rows' parameter)."""
    columns, conflict = tuple(rows[0]), tuple(skip_conflicts_on)

    def build() -> Any:
        src = _rows_source({c: table.c[c].type for c in columns}, param)
        stmt = postgresql.insert(table).from_select(columns, select(*(src.c[c] for c in columns)))
        return stmt.on_conflict_do_nothing(index_elements=list(conflict)) if conflict else stmt

    return _cached(("insert-statement", table, columns, conflict, param), build), {param: _json_rows(rows, columns)}


#: Statements run as one (:func:`bulk_writes`), by their parts' identities (the entry keeps them).
_combined: dict[tuple[int, ...], tuple[tuple[Any, ...], Any]] = {}


def _combined_statement(parts: tuple[Any, ...]) -> Any:
    key = tuple(id(part) for part in parts)
    found = _combined.get(key)
    if found is None or any(a is not b for a, b in zip(found[0], parts, strict=True)):
        if len(_combined) >= _STATEMENTS_MAX:
            _combined.clear()
        ctes = (part.cte(f"write_{i}") for i, part in enumerate(parts))
        found = _combined[key] = (parts, select(literal_column("1")).add_cte(*ctes))
    return found[1]


#: ``session.info`` key: the writes :func:`defer_write` put off, in order.
_DEFERRED = "zt_deferred_writes"


def defer_write(session: AsyncSession, write: tuple[Any, dict[str, Any]]) -> None:
    """PostgreSQL: run ``write`` (a :func:`bulk_update_statement` or :func:`bulk_insert_statement`
    with its parameters) not now but in ONE statement (:func:`bulk_writes`) with the
    transaction's last write of the kit — a consumer batch's inbox rows and versions — or else
    right before :class:`UnitOfWork` commits: a round trip less. Only for a write whose rows no
    later statement of the transaction reads or writes (it runs last, beside those writes)."""
    session.info.setdefault(_DEFERRED, []).append(write)


async def run_deferred(session: AsyncSession, writes: Sequence[tuple[Any, dict[str, Any]]] = ()) -> None:
    """The deferred writes of the session's transaction and ``writes``, now, in one statement."""
    await bulk_writes(session, [*session.info.pop(_DEFERRED, ()), *writes])


async def bulk_writes(session: AsyncSession, writes: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    """PostgreSQL, in the session's transaction: several bulk writes (:func:`bulk_insert_statement`,
    :func:`bulk_update_statement`, each with its own ``param``) in ONE statement, one round trip,
    each a data-modifying CTE of ``SELECT 1`` (services/kit/fetch.py runs it on asyncpg).

    They run on one snapshot, so none sees another's rows: they must write different rows (other
    tables, or other keys of one table), and their order is not defined."""
    from services.kit.fetch import fetch  # (fetch → reads → this module)

    if not writes:
        return
    if len(writes) == 1:
        stmt, params = writes[0]
    else:
        stmt = _combined_statement(tuple(part for part, _ in writes))
        params = {name: value for _, part_params in writes for name, value in part_params.items()}
    await fetch(session, stmt, params)


async def bulk_update(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    types: dict[str, Any],
    *,
    where: Callable[[Any], list[Any]],
    values: Callable[[Any], dict[str, Any]],
    params: dict[str, Any] | None = None,
    driver: bool = False,
) -> None:
    """UPDATE one row per parameter dict. ``types`` names the parameters (not column names:
    SQLAlchemy reserves those) with their SQL types; ``where(src)`` and ``values(src)`` build the
    statement from ``src.c.<parameter>``; ``params``: more bound values, the same for every row.
    On PostgreSQL one ``UPDATE … FROM json_to_recordset(…)``,
    built once per shape (table, parameters, and the code of ``where``/``values`` with what they
    capture) and reused; elsewhere an executemany of the same statement with bound parameters.

    So ``where``/``values`` (and ``bulk_upsert``'s ``update_existing``) must draw every varying
    value from ``src``: a value they read from elsewhere (a global, a clock) is frozen into the
    statement the first time. A captured list or bound expression just turns the reuse off.
    ``driver``: on PostgreSQL in a transaction, run by asyncpg directly (services/kit/fetch.py:
    asyncpg's errors, no statement events; the data hub's live path, ADR 0045)."""
    if not rows:
        return
    if is_postgres(session):
        stmt, values_ = bulk_update_statement(table, rows, types, where=where, values=values, params=params)
        if driver:
            from services.kit.fetch import fetch  # (fetch → reads → this module)

            await fetch(session, stmt, values_)
            return
        await session.execute(stmt, values_)
        return
    bound = _BindSource()
    rows = [{**params, **row} for row in rows] if params else list(rows)
    await session.execute(update(table).where(*where(bound)).values(**values(bound)), rows)
