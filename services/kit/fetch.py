"""Hot-path statements: built once with SQLAlchemy Core, compiled once, run by asyncpg (ADR 0045).

:func:`fetch` runs a reused statement in the session's transaction and returns its rows, each
read by column name (``row["customer_id"]``). On PostgreSQL the statement's SQL (compiled once
per statement object, as :class:`services.kit.reads.Reader` compiles it, ADR 0029: SQLAlchemy's
bind processing, the statement's own constants) goes straight to the asyncpg connection that
holds the session's transaction, which is begun first if it has not been, the way SQLAlchemy's
asyncpg adapter begins it before its first statement. ~180 µs of the process's CPU per
statement here, against ~580 through ``AsyncSession.execute`` and ~470 through
``exec_driver_sql`` (``bench/data_hub_live.py --statement-cost``, load 10).

Through the session instead, as usual: on SQLite; on an autocommit connection; for a statement
whose columns need SQLAlchemy's result processing; and on an engine whose statement events have
a listener (``ZT_DB_TRACE_STATEMENTS``' spans, a test or benchmark counting statements), which
then sees every statement.

A failing statement raises what SQLAlchemy would raise (asyncpg's error translated by the
dialect and wrapped: an ``IntegrityError`` for a unique violation; a disconnect invalidates the
connection). The transaction is SQLAlchemy's: its commit and rollback are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from asyncpg.exceptions import UniqueViolationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.kit.reads import compiled_for

__all__ = ["copy_rows", "fetch"]

#: ``session.info`` key: (the session's transaction, its AsyncConnection, the pooled connection).
_HELD = "zt_fetch_connection"


async def fetch(session: AsyncSession, stmt: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
    """The rows of ``stmt`` with ``params`` in the session's transaction (see the module doc).
    ``stmt`` must be built once and reused (e.g. cached by its builder), not built per call."""
    params = params or {}
    held = await _on_driver(session)
    if held is not None:
        conn, adapted, driver = held
        compiled = compiled_for(stmt, conn.dialect)
        if compiled.results is None:  # (else its columns need SQLAlchemy's result processing)
            try:
                if await _in_transaction(conn, adapted, driver):
                    return await driver.fetch(compiled.sql, *compiled.args(params))  # type: ignore[no-any-return]
            except Exception as exc:
                raise await _as_sqlalchemy(conn, adapted, compiled.sql, exc) from exc
    return await _through_session(session, stmt, params)


async def copy_rows(
    session: AsyncSession, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> bool:
    """PostgreSQL, in the session's transaction: ``COPY table (columns) FROM STDIN`` (binary,
    asyncpg's ``copy_records_to_table``) under a savepoint; ``records`` in ``columns``' order.

    False, and nothing written, when the COPY way is not open (SQLite, not asyncpg, an autocommit
    connection, a statement listener that must see every statement: then the caller inserts its
    usual way) or when a row's unique key exists (a unique violation: the savepoint is rolled
    back, the transaction goes on, the caller inserts if absent). Other errors raise as
    :func:`fetch`'s. (services/kit/bulk.py's :func:`~services.kit.bulk.copy_insert`, ADR 0068.)"""
    held = await _on_driver(session)
    if held is None:
        return False
    conn, adapted, driver = held
    try:
        if not await _in_transaction(conn, adapted, driver):
            return False
        try:
            async with driver.transaction():  # (nested: a savepoint)
                await driver.copy_records_to_table(table, records=records, columns=list(columns))
        except UniqueViolationError:
            return False
        return True
    except Exception as exc:
        raise await _as_sqlalchemy(conn, adapted, f"COPY {table}", exc) from exc


async def _on_driver(session: AsyncSession) -> tuple[AsyncConnection, Any, Any] | None:
    """The session's connection, its adapted DBAPI connection and the asyncpg connection under
    it, when the kit may send on that one itself; None to go through the session: not
    PostgreSQL over asyncpg, or a listener to the statement events (ZT_DB_TRACE_STATEMENTS'
    spans, a test counting statements) that must see every statement."""
    conn, raw = await _connection(session)
    sync = conn.sync_connection
    if conn.dialect.name != "postgresql" or sync is None or sync.dispatch.before_cursor_execute:
        return None
    driver, adapted = raw.driver_connection, cast(Any, raw.dbapi_connection)
    if driver is None or not hasattr(adapted, "_start_transaction"):
        return None
    return conn, adapted, driver


async def _in_transaction(conn: AsyncConnection, adapted: Any, driver: Any) -> bool:
    """True once the session's transaction is open on ``driver``: begun if it has not been, as
    the dialect's adapter begins it before its first statement (its BEGIN; the session commits
    or rolls it back as usual). False on an autocommit connection or outside a transaction."""
    if not driver.is_in_transaction():
        if adapted.isolation_level == "autocommit" or not conn.in_transaction():
            return False
        await adapted._start_transaction()
    return True


async def _connection(session: AsyncSession) -> tuple[AsyncConnection, Any]:
    """The session's connection and its pooled DBAPI connection, looked up once per transaction
    (``AsyncSession.connection()`` crosses the greenlet bridge: ~40 µs a call)."""
    sync_session = session.sync_session
    trans = sync_session.get_transaction()
    held = session.info.get(_HELD)
    if held is not None and trans is not None and held[0] is trans and trans.is_active:
        return held[1], held[2]
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    session.info[_HELD] = (sync_session.get_transaction(), conn, raw)
    return conn, raw


async def _through_session(session: AsyncSession, stmt: Any, params: Mapping[str, Any]) -> Sequence[Any]:
    result = await session.execute(stmt, params)
    return result.mappings().all() if cast(Any, result).returns_rows else []


async def _as_sqlalchemy(conn: AsyncConnection, adapted: Any, sql: str, exc: Exception) -> Exception:
    """asyncpg's ``exc`` as SQLAlchemy would have raised it (``IntegrityError`` for a unique
    violation, …: callers catch those), through the dialect's own translation; a disconnect
    invalidates the connection, as SQLAlchemy does."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        adapted._handle_exception(exc)  # (raises the DBAPI error it maps to)
    except Exception as translated:
        exc = translated
    if not isinstance(exc, dbapi.Error):
        return exc
    disconnect = conn.dialect.is_disconnect(exc, adapted, None)
    if disconnect:
        await conn.invalidate(exc)
    return DBAPIError.instance(
        sql, None, exc, dbapi.Error, hide_parameters=True, connection_invalidated=disconnect, dialect=conn.dialect
    )
