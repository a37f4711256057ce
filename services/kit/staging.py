"""Inserts staged in a unit of work and written at its commit in ONE round trip (docs/adr/0031).

A write's tail is a handful of plain INSERTs whose results nobody reads back: its outbox rows
(:func:`services.kit.outbox.add_event`), the command port's idempotency record, a ledger row.
Sent one by one (the ORM's flush sends one statement per table) each costs a round trip and
SQLAlchemy's per-statement work. :func:`stage_insert` only remembers the row; right before the
session commits, after the ORM's own flush (so a version bump still precedes its outbox row),
every staged row is written:

- on PostgreSQL in ONE statement: the last table's multi-row ``INSERT`` with the others as
  data-modifying CTEs (``WITH s0 AS (INSERT ...), s1 AS (INSERT ...) INSERT ...``), built once
  per shape (tables, rows and columns); with one row per table (every write today) SQLAlchemy
  caches its compiled form, a multi-row VALUES it compiles on each use (not cacheable);
- elsewhere (SQLite) one ``executemany`` per table, in staging order.

Rows of one table keep their staging order (one multi-row VALUES list: a BIGSERIAL id follows
it). A rollback forgets what was staged; a unique violation surfaces from ``commit()`` as the
usual ``IntegrityError``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import ColumnElement, Insert, Table, bindparam, event, insert, select, union_all
from sqlalchemy.orm import Session

_STAGED = "zt_staged_inserts"

#: (table, the column names of each of its rows), in first-staged order: a statement's shape.
Shape = tuple[tuple[Table, tuple[tuple[str, ...], ...]], ...]


class Staging(Protocol):
    """Where rows are staged: a session, or a :class:`services.kit.writes.Tx` (its ``info``)."""

    @property
    def info(self) -> dict[Any, Any]: ...


def stage_insert(session: Staging, table: Table, values: dict[str, Any]) -> None:
    """Write ``values`` into ``table`` when ``session`` commits (see the module docstring)."""
    session.info.setdefault(_STAGED, []).append((table, values))


def take_staged(info: dict[Any, Any]) -> list[tuple[Table, dict[str, Any]]]:
    """The rows staged in a transaction's ``info`` (forgotten there: they are being written)."""
    return info.pop(_STAGED, None) or []


def _grouped(staged: Sequence[tuple[Table, dict[str, Any]]]) -> dict[Table, list[dict[str, Any]]]:
    groups: dict[Table, list[dict[str, Any]]] = {}
    for table, values in staged:
        groups.setdefault(table, []).append(values)
    return groups


@functools.lru_cache(maxsize=128)
def _combined(shape: Shape, guard: ColumnElement[bool] | None = None) -> Insert:
    """One INSERT statement for every staged row (PostgreSQL): CTEs for all tables but the last.
    ``guard``: every row is inserted only if it holds (``INSERT … SELECT … WHERE guard``), all
    or none, as the statement's one snapshot sees it."""
    inserts = []
    for i, (table, rows) in enumerate(shape):
        values = [{c: bindparam(f"s{i}_{j}_{c}", type_=table.c[c].type) for c in cols} for j, cols in enumerate(rows)]
        if guard is not None:
            columns = rows[0]
            selects = [select(*(row[c] for c in columns)).where(guard) for row in values]
            inserts.append(insert(table).from_select(columns, selects[0] if len(selects) == 1 else union_all(*selects)))
            continue
        # (one row: a plain VALUES, which SQLAlchemy caches compiled; a multi-row VALUES it compiles each time)
        inserts.append(insert(table).values(values[0] if len(values) == 1 else values))
    statement = inserts[-1]
    for i, other in enumerate(inserts[:-1]):
        statement = statement.add_cte(other.cte(f"staged_{i}"))
    return statement


def _send(session: Session, staged: Sequence[tuple[Table, dict[str, Any]]]) -> None:
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        for table, rows in _grouped(staged).items():
            conn.execute(insert(table), rows if len(rows) > 1 else rows[0])
        return
    conn.execute(*staged_statement(staged))


def staged_statement(
    staged: Sequence[tuple[Table, dict[str, Any]]], guard: Guard | None = None
) -> tuple[Insert, dict[str, Any]]:
    """PostgreSQL: the one INSERT statement (built once per shape) for ``staged`` and its values;
    with a ``guard`` (:func:`services.kit.writes.guard_staged`) the rows go in only if it holds."""
    groups = _grouped(staged)
    shape = tuple((table, tuple(tuple(row) for row in rows)) for table, rows in groups.items())
    params = {
        f"s{i}_{j}_{c}": value
        for i, rows in enumerate(groups.values())
        for j, row in enumerate(rows)
        for c, value in row.items()
    }
    if guard is None:
        return _combined(shape), params
    return _combined(shape, guard.condition), {**guard.params, **params}


class Guard(NamedTuple):
    """A condition the staged rows are written under (its ``bindparam`` names must not start with
    ``s<digit>``), and what to raise when it does not hold (built only then)."""

    condition: ColumnElement[bool]
    params: dict[str, Any]
    refusal: Callable[[], Exception]


@event.listens_for(Session, "before_commit")
def _write_staged(session: Session) -> None:
    staged = session.info.pop(_STAGED, None)
    if staged:
        session.flush()  # the ORM's own changes first (e.g. the aggregate's version bump)
        _send(session, staged)


@event.listens_for(Session, "after_rollback")
def _forget_staged(session: Session) -> None:
    session.info.pop(_STAGED, None)
