"""Write transactions of Core statements at the driver's own cost (docs/adr/0042).

A hot write (a posting, a registration, an update) is a handful of Core statements: the replay
read, one conditional ``UPDATE … RETURNING`` or a ``SELECT … FOR UPDATE``, and the staged
inserts (:mod:`services.kit.staging`) at commit. Through an ``AsyncSession`` each statement pays
SQLAlchemy's execution layer (the greenlet bridge, the session's transaction, the connection and
result wrappers: ~0.3–0.8 ms of client CPU per statement, ADR 0029) and the commit its flush and
events. :func:`transaction` keeps what the library is good at — the statements written in Core,
compiled once by the engine's dialect (:class:`services.kit.reads` compiled form), the engine's
pool (size, ping-after-idle, invalidation) — and on PostgreSQL with asyncpg runs the transaction
on the pooled asyncpg connection itself:

- the use case's statements (:meth:`Tx.first`, :meth:`Tx.execute`), ``BEGIN`` before the first
  one that writes or locks (plain reads before it run on their own: the same answers at READ
  COMMITTED); at commit the staged inserts as ONE statement (the one :mod:`~services.kit.staging`
  sends), the ``NOTIFY`` when :mod:`~services.kit.outbox` asks for it, ``COMMIT`` — and when
  nothing else wrote, the staged INSERT alone, atomic by itself, without BEGIN and COMMIT;
- a condition the staged rows depend on (:func:`guard_staged`, e.g. "the product is still
  active") travels in that INSERT (``INSERT … SELECT … WHERE``) instead of a read of its own;
- a statement must be built ONCE (module level or ``functools.lru_cache``) with named
  ``bindparam``\\ s: its compiled SQL is cached by the statement's identity;
- rows come back indexed by position, as the :class:`services.kit.Reader`'s;
- a unique violation raises asyncpg's ``UniqueViolationError`` (an integrity error: the command
  port's retry treats it as SQLAlchemy's ``IntegrityError``); an infrastructure failure recycles
  the pool's current generation of connections, a cancelled or broken one is invalidated alone.

SQLite (``make run``'s default), engines with statement spans (``ZT_DB_TRACE_STATEMENTS``) and
other drivers run the same statements in a unit of work's session instead (:class:`SessionTx`):
same rows, same staged inserts at commit, the spans kept.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql import Executable

from services.kit.db import WAKES_AFTER_COMMIT, UnitOfWork, on_driver
from services.kit.faults import is_infrastructure_error
from services.kit.outbox import NOTIFY_SQL, notify_needed
from services.kit.reads import compiled_for
from services.kit.staging import Guard, staged_statement, take_staged

__all__ = ["SessionTx", "Tx", "driver_writes", "guard_staged", "transaction"]


class Tx(Protocol):
    """One write transaction of Core statements (either implementation below)."""

    @property
    def info(self) -> dict[str, Any]:
        """Per-transaction state (what :func:`services.kit.stage_insert` and ``add_event`` stage)."""
        ...

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Any | None:
        """The first row of ``statement`` (positional), or None."""
        ...

    async def execute(self, statement: Executable, params: Mapping[str, Any]) -> int:
        """Run ``statement`` (no rows wanted); the number of rows it changed."""
        ...


class SessionTx:
    """A :class:`Tx` over a unit of work's session (SQLite, traced engines): the session's
    ``before_commit`` listeners write the staged rows and NOTIFY."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def info(self) -> dict[str, Any]:
        return self.session.info

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Any | None:
        return (await self.session.execute(statement, dict(params))).first()

    async def execute(self, statement: Executable, params: Mapping[str, Any]) -> int:
        result = await self.session.execute(statement, dict(params))
        return int(getattr(result, "rowcount", -1))


class _DriverTx:
    """A :class:`Tx` on the pooled asyncpg connection. ``BEGIN`` comes lazily, before the first
    statement that writes or locks: plain reads before it run on their own, as in a READ
    COMMITTED transaction (each statement its own snapshot; a plain SELECT takes no row lock),
    and a use case whose only write is the staged INSERT at commit sends just that one statement
    (atomic on its own) — no BEGIN, no COMMIT."""

    def __init__(self, driver: Any, dialect: Dialect, pool: Any, wakes_after_commit: bool) -> None:
        self._driver = driver
        self._dialect = dialect
        self._pool = pool
        self.begun = False
        self.info: dict[str, Any] = {WAKES_AFTER_COMMIT: wakes_after_commit}

    async def _begin(self) -> None:
        if not self.begun:
            await self._driver.execute("BEGIN")
            self.begun = True

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Any | None:
        compiled = compiled_for(statement, self._dialect)
        if not compiled.plain_read:
            await self._begin()
        record = await self._driver.fetchrow(compiled.sql, *compiled.args(params))
        return None if record is None else compiled.row(record)

    async def execute(self, statement: Executable, params: Mapping[str, Any]) -> int:
        if not compiled_for(statement, self._dialect).plain_read:
            await self._begin()
        return await self._run(statement, params)

    async def _run(self, statement: Executable, params: Mapping[str, Any]) -> int:
        compiled = compiled_for(statement, self._dialect)
        status = await self._driver.execute(compiled.sql, *compiled.args(params))
        last = str(status).rsplit(" ", 1)[-1]  # ("UPDATE 1", "INSERT 0 1")
        return int(last) if last.isdigit() else -1

    async def commit(self) -> None:
        """What the session's ``before_commit`` listeners do (the staged rows, the NOTIFY), then
        COMMIT; the staged rows alone, outside a transaction, if nothing else was written."""
        staged = take_staged(self.info)
        guard: Guard | None = self.info.pop(_GUARD, None)
        notify = notify_needed(self.info, "postgresql", self._pool)
        if not self.begun and not notify:
            if staged:
                await self._write(staged, guard)  # (one statement: atomic on its own)
            return
        await self._begin()
        if staged:
            await self._write(staged, guard)
        if notify:
            await self._driver.execute(NOTIFY_SQL)
        await self._driver.execute("COMMIT")
        self.begun = False

    async def _write(self, staged: list[Any], guard: Guard | None) -> None:
        if not await self._run(*staged_statement(staged, guard)) and guard is not None:
            raise guard.refusal()  # (the guard did not hold: nothing was written)

    async def rollback(self) -> None:
        if self.begun:
            self.begun = False
            await self._driver.execute("ROLLBACK")


_GUARD = "zt_staged_guard"


@functools.lru_cache(maxsize=32)
def _holds(condition: ColumnElement[bool]) -> Select[Any]:
    return select(literal_column("1")).where(condition)


async def guard_staged(
    tx: Tx, condition: ColumnElement[bool], params: Mapping[str, Any], refusal: Callable[[], Exception]
) -> None:
    """The staged rows (:func:`services.kit.stage_insert`) are written only if ``condition`` (built
    once, e.g. ``exists(…)`` with named ``bindparam``\\ s) holds; if not, ``refusal()`` is raised
    and nothing is written. On the driver path the condition travels in the staged INSERT itself
    (``INSERT … SELECT … WHERE``: checked in the statement's own snapshot, no round trip of its
    own) and the commit raises; elsewhere (a unit of work's session) it is checked here, now."""
    if isinstance(tx, _DriverTx):
        tx.info[_GUARD] = Guard(condition, dict(params), refusal)
        return
    if await tx.first(_holds(condition), params) is None:
        raise refusal()


def driver_writes(engine: AsyncEngine) -> bool:
    """True if :func:`transaction` runs on the pool's asyncpg connection for this engine."""
    return on_driver(engine)


@contextlib.asynccontextmanager
async def transaction(
    engine: AsyncEngine, *, after_commit: list[Callable[[], None]] | None = None
) -> AsyncIterator[tuple[Tx, Callable[[], Any]]]:
    """``async with transaction(engine) as (tx, commit):`` — run statements on ``tx``, then
    ``await commit()``; leaving without it rolls back. ``after_commit`` callbacks run after a
    commit (as :class:`services.kit.UnitOfWork`'s)."""
    if not driver_writes(engine):
        async with UnitOfWork(engine, after_commit=after_commit) as uow:
            yield SessionTx(uow.session), uow.commit
        return
    callbacks = list(after_commit or [])
    pool = engine.sync_engine.pool
    pooled = await engine.raw_connection()
    driver: Any = pooled.driver_connection
    committed = False
    tx = _DriverTx(driver, engine.dialect, pool, bool(callbacks))

    async def commit() -> None:
        nonlocal committed
        await tx.commit()
        committed = True

    try:
        yield tx, commit
        if not committed:
            await tx.rollback()
    except BaseException as exc:
        if is_infrastructure_error(exc):
            # (as the Reader: the database went away; recycle this generation of connections)
            pool._invalidate(pooled, exc if isinstance(exc, Exception) else None)  # type: ignore[attr-defined]
        elif not isinstance(exc, Exception) or driver.is_closed():
            pooled.invalidate(exc if isinstance(exc, Exception) else None)  # (cancelled mid-statement)
        elif not committed:
            try:
                await tx.rollback()
            except Exception:
                pooled.invalidate()
        raise
    finally:
        pooled.close()
    if committed:
        for callback in callbacks:
            callback()
