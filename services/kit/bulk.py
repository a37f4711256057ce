"""Bulk statements: one set-based statement per batch on PostgreSQL (rows as one JSON parameter,
``json_to_recordset``), an executemany of the same statement elsewhere; several of them as ONE
statement (:func:`bulk_writes`) and writes put off to a transaction's last one (:func:`defer_write`)."""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Iterable, Sequence
from types import FunctionType
from typing import Any

import orjson
from sqlalchemy import Column, Table, Text, bindparam, cast, column, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from services.kit.db import _DEFERRED, is_postgres
from services.kit.fetch import copy_rows, fetch


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


def _insert_select(table: Table, columns: Sequence[str], param: str = "bulk_rows") -> Any:
    """PostgreSQL: ``INSERT INTO table (columns) SELECT … FROM json_to_recordset(:param)`` — the
    rows as one JSON parameter (:func:`_rows_source`), typed as the table's columns."""
    src = _rows_source({c: table.c[c].type for c in columns}, param)
    return postgresql.insert(table).from_select(columns, select(*(src.c[c] for c in columns)))


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


def _cached(key: tuple[Any, ...], build: Callable[[], Any], own: tuple[Any, ...] | None = None) -> Any:
    """The statement ``build()`` makes, built once per shape of ``key`` (or per ``own``: a key
    the caller vouches for, taken as it is instead of the shape)."""
    try:
        hash_key: tuple[Any, ...] | None = ("own", *own) if own is not None else tuple(_shape(part) for part in key)
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
) -> None:
    """``INSERT … SELECT … FROM json_to_recordset(:bulk_rows)``, finished by ``finish(stmt)``
    (ON CONFLICT …), compiled once per shape and sent with the rows as its one parameter."""
    columns = tuple(rows[0])
    dialect = session.bind.dialect

    def build() -> tuple[Any, str, bool]:
        stmt = finish(_insert_select(table, columns))
        compiled = stmt.compile(dialect=dialect)
        return stmt, str(compiled), list(compiled.positiontup or ()) == ["bulk_rows"]

    _, sql, plain = _cached(("insert", dialect.name, table, columns, *shape), build)
    if not plain:  # (a builder that binds values of its own: run it as a statement)
        raise RuntimeError(f"bulk insert into {table.name}: the statement binds more than the rows")
    conn = await session.connection()
    await conn.exec_driver_sql(sql, (_json_rows(rows, columns),))


async def bulk_insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_conflicts_on: Sequence[str] = (),
) -> None:
    """INSERT many rows (every row with the same keys). On PostgreSQL one
    ``INSERT … SELECT … FROM json_to_recordset(:rows)``: one parameter and one plan for thousands
    of rows, where an executemany binds and executes each row. ``skip_conflicts_on`` (a unique key) makes
    conflicting rows no-ops."""
    if not rows:
        return
    conflict = list(skip_conflicts_on)
    if is_postgres(session):

        def finish(stmt: Any) -> Any:
            return stmt.on_conflict_do_nothing(index_elements=conflict) if conflict else stmt

        await _pg_insert(session, table, rows, finish, ("skip", tuple(conflict)))
        return
    stmt = sqlite.insert(table)
    if conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    await session.execute(stmt, list(rows))


#: :func:`copy_insert` COPYs this many rows or more; fewer go the INSERT way (a COPY under its
#: savepoint costs three round trips more than one CTE of a batch's statement, ~0.2 ms of the
#: client's CPU, and saves PostgreSQL ~5 µs a row: ADR 0068).
COPY_MIN_ROWS = 100


async def copy_insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[dict[str, Any]] | Sequence[tuple[Any, ...]],
    *,
    skip_conflicts_on: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> None:
    """INSERT many rows as :func:`bulk_insert` does (``skip_conflicts_on``: conflicting rows are
    no-ops), on PostgreSQL with a binary COPY under a savepoint: PostgreSQL spends about half its
    CPU of ``INSERT … SELECT FROM json_to_recordset … ON CONFLICT DO NOTHING`` (ADR 0068). A COPY
    cannot skip a conflicting row, so when one of the rows' keys exists the savepoint is rolled
    back and all of them go :func:`bulk_insert`'s way, insert-if-absent: the outcome is the same
    either way. Without ``skip_conflicts_on`` a conflict raises as :func:`bulk_insert`'s would.

    ``columns``: the rows are tuples in these columns' order, the COPY's own records (rows built
    that way skip a dict each, and its conversion: ADR 0071); without it, dicts."""
    if not rows:
        return
    if columns is None:
        dicts = typing.cast("Sequence[dict[str, Any]]", rows)
        names = tuple(dicts[0])
    else:
        tuples = typing.cast("Sequence[tuple[Any, ...]]", rows)
        names = tuple(columns)
    if is_postgres(session) and len(rows) >= COPY_MIN_ROWS:
        if columns is None:
            row_of = operator.itemgetter(*names) if len(names) > 1 else (lambda r: (r[names[0]],))
            tuples = [row_of(r) for r in dicts]
        if await copy_rows(session, table.name, names, tuples):
            return
    if columns is not None:
        dicts = as_dicts(columns, tuples)
    await bulk_insert(session, table, dicts, skip_conflicts_on=skip_conflicts_on)


def as_dicts(columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows given as tuples in ``columns``' order, as the bulk helpers' dicts."""
    names = tuple(columns)
    return [dict(zip(names, row, strict=True)) for row in rows]


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
    key: tuple[Any, ...] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL's :func:`bulk_update`: its ``UPDATE … FROM json_to_recordset(…)`` (built once per
    shape) and the parameters to run it with, for a caller that runs it on its own connection or
    with others (:func:`bulk_writes`; ``param`` names its rows' parameter). ``key``: hashable
    values that determine ``types``, ``where``, ``values`` and ``param`` (e.g. the call site and
    the table), so the statement is found by it instead of by taking the shape of the
    arguments, closures included, on every call (~10–40 µs)."""

    def build() -> Any:
        src = _rows_source(types, param)
        return update(table).where(*where(src)).values(**values(src))

    own = None if key is None else ("update", table, param, *key)
    stmt = _cached(("update", table, tuple(types.items()), where, values, param), build, own)
    return stmt, {**(params or {}), param: _json_rows(rows, types)}


def bulk_insert_statement(
    table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts_on: Sequence[str] = (), param: str = "bulk_rows"
) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL's :func:`bulk_insert` as a statement (built once per shape) and its parameters,
    for :func:`bulk_writes` (``param`` names its rows' parameter)."""
    columns, conflict = tuple(rows[0]), tuple(skip_conflicts_on)

    def build() -> Any:
        stmt = _insert_select(table, columns, param)
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
            await fetch(session, stmt, values_)
            return
        await session.execute(stmt, values_)
        return
    bound = _BindSource()
    rows = [{**params, **row} for row in rows] if params else list(rows)
    await session.execute(update(table).where(*where(bound)).values(**values(bound)), rows)
