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
runs through the session. A failing
statement raises asyncpg's own exception (:func:`services.kit.faults.is_infrastructure_error`
knows them); the transaction is SQLAlchemy's, so its rollback and commit are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

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
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is not None and driver.is_in_transaction():
            compiled = _compiled.get(id(stmt))
            if compiled is None or compiled.statement is not stmt:
                if len(_compiled) >= _MAX:
                    _compiled.clear()
                compiled = _compiled[id(stmt)] = _Compiled(stmt, conn.dialect)
            if compiled.results is None:  # (else its columns need SQLAlchemy's result processing)
                return await driver.fetch(compiled.sql, *compiled.args(params))  # type: ignore[no-any-return]
    return (await session.execute(stmt, params)).mappings().all()
