"""Hot-path reads: a statement built once with SQLAlchemy Core, compiled once, run by asyncpg.

:func:`fetch` runs a reused SELECT (or ``… RETURNING``) and returns its rows, each read by column
name (``row["customer_id"]``). On PostgreSQL, inside a
transaction that already began, the statement's SQL (compiled once per statement object) goes
straight to the connection's asyncpg driver: ~130 µs of the process's CPU per statement here,
against ~450–490 through ``AsyncSession.execute`` and ~280–370 through ``exec_driver_sql``
(``bench/data_hub_live.py --statement-cost``; docs/adr/0045-hub-live-reads-on-asyncpg.md).
Elsewhere through the session, as usual: on SQLite; for the first statement of a transaction
(SQLAlchemy's asyncpg adapter begins the transaction with the first statement it runs itself);
and on an engine whose statement events have a listener (``ZT_DB_TRACE_STATEMENTS``' spans, a
test or benchmark counting statements), which then sees every statement.

The statement is compiled as :class:`services.kit.reads.Reader` compiles it (ADR 0029): its
parameters get SQLAlchemy's bind processing; a statement whose columns need result processing
runs through the session. A failing statement raises what SQLAlchemy would raise (asyncpg's
error translated by the dialect and wrapped: an ``IntegrityError`` for a unique violation; a
disconnect invalidates the connection); the transaction is SQLAlchemy's, so its rollback and
commit are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.kit.reads import _Compiled

__all__ = ["fetch"]

#: Compiled statements by the statement's identity (the entry keeps the statement alive).
_compiled: dict[int, _Compiled] = {}
_MAX = 1024


async def fetch(session: AsyncSession, stmt: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
    """The rows of ``stmt`` with ``params`` in the session's transaction (see the module doc).
    ``stmt`` must be built once and reused (e.g. cached by its builder), not built per call."""
    params = params or {}
    conn = await session.connection()
    sync = conn.sync_connection
    # (a listener to the statement events — ZT_DB_TRACE_STATEMENTS' spans, a test counting
    # statements — sees every statement: then through SQLAlchemy)
    if conn.dialect.name == "postgresql" and sync is not None and not sync.dispatch.before_cursor_execute:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if driver is not None and driver.is_in_transaction():
            compiled = _compiled.get(id(stmt))
            if compiled is None or compiled.statement is not stmt:
                if len(_compiled) >= _MAX:
                    _compiled.clear()
                compiled = _compiled[id(stmt)] = _Compiled(stmt, conn.dialect)
            if compiled.results is None:  # (else its columns need SQLAlchemy's result processing)
                try:
                    return await driver.fetch(compiled.sql, *compiled.args(params))  # type: ignore[no-any-return]
                except Exception as exc:
                    raise await _as_sqlalchemy(conn, raw.dbapi_connection, compiled.sql, exc) from exc
    return (await session.execute(stmt, params)).mappings().all()


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
