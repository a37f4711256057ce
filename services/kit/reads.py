"""Single-statement reads at the driver's own cost: SQLAlchemy Core statements, compiled once,
run on PostgreSQL through the engine's own pool on the raw asyncpg connection (ADR 0029).

A read through an ``AsyncSession`` (or an ``AsyncConnection``) costs ~0.3–0.5 ms of client CPU
more than the same statement on asyncpg (the greenlet bridge, the connection and result
wrappers, the compiled-cache lookup; ``bench/read_paths.py``): more than half of a primary-key
GetCustomer. :class:`Reader` keeps what the library is good at — the statement written in Core,
compiled by the dialect, the engine's pool (its size, its ping-after-idle, its invalidation) —
and sends the compiled SQL on the pooled asyncpg connection itself:

- every statement runs on its own (asyncpg outside a transaction), as ``read_sessionmaker``'s
  autocommit reads do (ADR 0026): READ COMMITTED answers, never a write;
- a statement must be built ONCE (module level or ``functools.lru_cache``) with named
  ``bindparam``s; its values come with each call. Its compiled SQL is cached by the statement's
  identity. A statement built per call is compiled per call — correct, but slow;
- rows come back indexed by position in the ``select``'s column order;
- SQLite (the ``make run`` default) and engines with statement tracing on
  (``ZT_DB_TRACE_STATEMENTS``, ADR 0025) run the same statement through a read session instead,
  so both backends answer the same and a traced statement keeps its span.

A connection that fails with an infrastructure error invalidates the pool's current generation
of connections, as SQLAlchemy does on a disconnect (each is replaced at its next checkout); one
closed or cancelled under the read is invalidated alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable, Select, visitors
from sqlalchemy.sql.dml import UpdateBase

from services.kit.db import on_driver, read_sessionmaker
from services.kit.faults import is_infrastructure_error

__all__ = ["Reader"]

_Processor = Callable[[Any], Any] | None


def _plain_read(statement: Any) -> bool:
    """A ``SELECT`` that neither writes (no INSERT/UPDATE/DELETE anywhere in it, e.g. in a CTE)
    nor locks (no FOR UPDATE/SHARE): it may run outside the transaction."""
    if not isinstance(statement, Select):
        return False
    for element in visitors.iterate(statement):
        if isinstance(element, UpdateBase) or getattr(element, "_for_update_arg", None) is not None:
            return False
    return True


class _Compiled:
    """A statement compiled for asyncpg: its SQL, the order of its parameters, their defaults
    and bind processors, and the result processors of its columns (None where the driver's
    value is already what SQLAlchemy would give)."""

    __slots__ = ("defaults", "names", "params", "plain_read", "results", "sql", "statement")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("Reader: expanding or literal-execute parameters are not supported; use kit in_list")
        self.statement = statement  # (kept alive: the cache is keyed by its identity)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or ())
        binds = compiled.binds.items()
        self.defaults = {name: param.effective_value for name, param in binds if param.value is not None}
        processors = compiled._bind_processors  # (SQLAlchemy's own per-parameter converters)
        self.params: list[tuple[str, _Processor]] = [(name, processors.get(name)) for name in self.names]
        results: list[_Processor] = []
        for column in compiled._result_columns:  # (the select's columns, their types)
            try:
                results.append(column.type._cached_result_processor(dialect, None))
            except (TypeError, KeyError):
                results.append(None)  # (needs the driver's type code: Float/Numeric as asyncpg gives them)
        self.results: list[_Processor] | None = results if any(results) else None
        self.plain_read = _plain_read(statement)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, process in self.params:
            value = params[name] if name in params else self.defaults[name]
            out.append(process(value) if process is not None else value)
        return out

    def row(self, record: Any) -> Any:
        if self.results is None:
            return record
        return tuple(value if p is None else p(value) for value, p in zip(record, self.results, strict=True))


#: Statements compiled for asyncpg, by the statement's identity and the dialect (the entry keeps
#: the statement alive); shared by the Reader, the kit's writes and ``fetch``.
_compiled: dict[tuple[int, str], _Compiled] = {}
_COMPILED_MAX = 1024


def compiled_for(statement: Any, dialect: Any) -> _Compiled:
    """``statement`` compiled for asyncpg, once per statement object (build statements once)."""
    key = (id(statement), dialect.name)
    found = _compiled.get(key)
    if found is None or found.statement is not statement:
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.clear()
        found = _compiled[key] = _Compiled(statement, dialect)
    return found


class Reader:
    """Reads that write nothing, one statement each (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._raw = on_driver(engine)
        self._sessions = read_sessionmaker(engine)

    async def all(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """Every row of ``statement`` (rows indexed by column position)."""
        params = params or {}
        if not self._raw:
            async with self._sessions() as session:
                return list((await session.execute(statement, dict(params))).all())
        compiled = compiled_for(statement, self._engine.dialect)
        args = compiled.args(params)
        pooled = await self._engine.raw_connection()
        try:
            records = await pooled.driver_connection.fetch(compiled.sql, *args)  # type: ignore[union-attr]
        except BaseException as exc:
            driver = pooled.driver_connection
            if is_infrastructure_error(exc):
                # The database went away (restart, failover): like SQLAlchemy on a disconnect, every
                # connection of this generation is recycled at its next checkout, not just this one.
                self._engine.sync_engine.pool._invalidate(pooled, exc)
            elif driver is None or driver.is_closed() or not isinstance(exc, Exception):
                # (a closed connection, or a read cancelled mid-statement: never hand it out again)
                pooled.invalidate(exc if isinstance(exc, Exception) else None)
            raise
        finally:
            pooled.close()
        if compiled.results is None:
            return records  # type: ignore[no-any-return]
        return [compiled.row(r) for r in records]

    async def first(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first row of ``statement``, or None."""
        rows = await self.all(statement, params)
        return rows[0] if rows else None
