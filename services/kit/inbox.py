"""The inbox's database side: which events a consumer applied, and the newest aggregate versions.

:class:`InboxRow` is the real duplicate check (its primary key is the event id);
:class:`AggregateVersion` makes older versions stale. A batch loads what it needs in one round
trip (:func:`_load`), decides in memory (:func:`_seen`, :func:`_is_stale`) and writes its rows
with two bulk statements before it commits (:func:`_flush`). Used by
:class:`services.kit.consumer.InboxConsumer`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.kit.bulk import (
    _insert_select,
    _json_rows,
    bulk_insert,
    bulk_upsert,
    run_deferred,
)
from services.kit.db import (
    Base,
    dialect_of,
    in_list,
    is_postgres,
)
from services.kit.events import PoisonEvent, ReceivedEvent, parse_record
from services.kit.fetch import fetch


class InboxRow(Base):
    """An event this service has applied (or dead-lettered): the real duplicate check."""

    __tablename__ = "inbox"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(200))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # applied | stale | dead
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AggregateVersion(Base):
    """The newest version applied per aggregate: older ones are stale."""

    __tablename__ = "aggregate_versions"

    aggregate_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


@dataclass
class _Batch:
    """What one transaction knows and will write about the inbox and aggregate versions.

    Loaded with two queries per batch and written with two or three bulk statements right
    before the commit (not an ORM object per event): the consumer's fixed cost per event.
    """

    seen: dict[str, bool] = field(default_factory=dict)  # event id -> in the inbox (or added now)
    stored: dict[tuple[str, str], int | None] = field(default_factory=dict)  # version in the DB
    versions: dict[tuple[str, str], int] = field(default_factory=dict)  # newest applied in this batch
    inbox: list[dict[str, Any]] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # processed_at of its rows
    outcomes: dict[str, int] = field(default_factory=dict)  # for the consumer.events counter
    #: False: an event with an aggregate version, applied or stale, gets no inbox row — its
    #: version, stored in the same transaction, already makes a redelivery stale (ADR 0049).
    record_versioned: bool = True
    versioned: set[str] = field(default_factory=set)  # ids of this batch's events checked by version


_INBOX: Table = InboxRow.__table__  # type: ignore[assignment]
_VERSIONS: Table = AggregateVersion.__table__  # type: ignore[assignment]


Decoded = ReceivedEvent | PoisonEvent  # a record decoded, or why it never can be
#: One poll: per partition, its records in offset order, each with its decoded event.
_Polled = dict[TopicPartition, list[tuple[ConsumerRecord[Any, Any], Decoded]]]


def _decode(record: ConsumerRecord[Any, Any]) -> Decoded:
    try:
        return parse_record(
            record.headers or (), record.value, key=record.key, topic=record.topic,
            partition=record.partition, offset=record.offset,
        )  # fmt: skip
    except PoisonEvent as exc:
        return exc


@functools.lru_cache(maxsize=8)
def _load_query(dialect: str, by_ids: bool, by_aggs: bool) -> Any:
    """Which events were applied before (``ids``), the stored versions (``agg_types``/``aggs``,
    parallel lists): both in one round trip (UNION ALL; inbox rows come back with a NULL
    version), built once.

    The versions are looked up by their whole primary key (type, id). Matching ``aggregate_id``
    alone cannot use the key (its leading column is the type): PostgreSQL scanned the table for
    every batch — 148 ms per 2,000-event batch with 1,000,000 aggregates — and where asyncpg's
    cached statement got a generic plan, compared each row with each array element: 3.4 s per
    batch with 30,000 (``bench/inbox_lookup.py``). On PostgreSQL the pairs are ``unnest``-ed
    into a join on the key (33–45 ms for the whole lookup at either size); elsewhere (SQLite)
    both columns get an IN list.
    """
    seen_q = select(
        _INBOX.c.event_id.label("a"), cast(null(), String).label("b"), cast(null(), BigInteger).label("v")
    ).where(in_list(dialect, _INBOX.c.event_id, "ids"))
    v = _VERSIONS.c
    labelled = (v.aggregate_type.label("a"), v.aggregate_id.label("b"), v.version.label("v"))
    if dialect == "postgresql":
        keys = (
            func.unnest(
                bindparam("agg_types", type_=postgresql.ARRAY(v.aggregate_type.type)),
                bindparam("aggs", type_=postgresql.ARRAY(v.aggregate_id.type)),
            )
            .table_valued("t", "a")
            .render_derived()
        )
        versions_q = select(*labelled).select_from(
            keys.join(_VERSIONS, and_(v.aggregate_type == keys.c.t, v.aggregate_id == keys.c.a))
        )
    else:
        versions_q = select(*labelled).where(
            in_list(dialect, v.aggregate_type, "agg_types"), in_list(dialect, v.aggregate_id, "aggs")
        )
    if by_ids and by_aggs:
        return union_all(seen_q, versions_q)
    return seen_q if by_ids else versions_q


async def _load(session: AsyncSession, decoded: Sequence[Decoded], *, record_versioned: bool = True) -> _Batch:
    """Which of these events were applied before, and the stored versions of their aggregates.
    ``record_versioned``: see :attr:`_Batch.record_versioned`."""
    batch = _Batch(record_versioned=record_versioned)
    events = [e for e in decoded if isinstance(e, ReceivedEvent)]
    ids = {e.id for e in events}
    aggs = list({(e.aggregate_type, e.aggregate_id) for e in events if e.aggregate_type and e.aggregate_id})
    rows: Sequence[Any] = []
    if ids or aggs:
        dialect = dialect_of(session)
        query = _load_query(dialect, bool(ids), bool(aggs))
        # PostgreSQL unnests the types and ids as pairs; an IN list needs each type once.
        types = [t for t, _ in aggs] if dialect == "postgresql" else sorted({t for t, _ in aggs})
        keys = {"ids": list(ids), "agg_types": types, "aggs": [a for _, a in aggs]}
        rows = await fetch(session, query, keys)
    present = {r["a"] for r in rows if r["v"] is None}
    found = {(r["a"], r["b"]): r["v"] for r in rows if r["v"] is not None}
    batch.seen = dict.fromkeys(ids, False)  # (C loops: a batch holds up to 10,000 ids)
    batch.seen.update(dict.fromkeys(present, True))
    batch.stored.update({key: found.get(key) for key in aggs})
    return batch


async def _seen(session: AsyncSession, batch: _Batch, event_id: str) -> bool:
    if event_id not in batch.seen:
        found = await session.scalar(select(_INBOX.c.event_id).where(_INBOX.c.event_id == event_id))
        batch.seen[event_id] = found is not None
    return batch.seen[event_id]


async def _is_stale(session: AsyncSession, batch: _Batch, event: ReceivedEvent) -> bool:
    """True if not newer than the last applied version; records the new version otherwise."""
    known = _stale_if_loaded(batch, event)
    if known is not None:
        return known
    key = (event.aggregate_type, event.aggregate_id)
    batch.stored[key] = await session.scalar(
        select(_VERSIONS.c.version).where(_VERSIONS.c.aggregate_type == key[0], _VERSIONS.c.aggregate_id == key[1])
    )
    return _stale_if_loaded(batch, event) is True


def _stale_if_loaded(batch: _Batch, event: ReceivedEvent) -> bool | None:
    """:func:`_is_stale` when its aggregate's stored version is loaded (as :func:`_load` loads
    a batch's), without a coroutine; None when it is not (nothing recorded then)."""
    if not event.aggregate_type or not event.version:
        return False
    key = (event.aggregate_type, event.aggregate_id)
    stored = batch.stored
    if key not in stored:
        return None
    if not batch.record_versioned:
        batch.versioned.add(event.id)
    current = batch.versions.get(key, stored[key])
    if current is not None and current >= event.version:
        return True
    batch.versions[key] = event.version
    return False


def _records(batch: _Batch, event_id: str) -> bool:
    """Whether this applied or stale event gets an inbox row: always, or (``record_versioned``
    False) only without an aggregate version (dead ones always get theirs)."""
    return batch.record_versioned or event_id not in batch.versioned


_INBOX_COLUMNS = tuple(c.name for c in _INBOX.columns)
_VERSION_COLUMNS = ("aggregate_type", "aggregate_id", "version")


def _keep_greater(new: Any) -> dict[str, Any]:
    version = _VERSIONS.c.version
    return {"version": case((new.version > version, new.version), else_=version)}


@functools.lru_cache(maxsize=1)
def _pg_flush() -> tuple[Any, Any]:
    """PostgreSQL: the statements writing a batch's new versions (an upsert keeping the greater)
    and its inbox rows, each with its rows as one JSON parameter (``versions``, ``rows``); run as
    ONE statement (kit ``bulk_writes``) with the transaction's deferred writes (``defer_write``):
    one round trip for all of them."""
    upsert = _insert_select(_VERSIONS, _VERSION_COLUMNS, "versions")
    upsert = upsert.on_conflict_do_update(
        index_elements=["aggregate_type", "aggregate_id"], set_=_keep_greater(upsert.excluded)
    )
    return upsert, _insert_select(_INBOX, _INBOX_COLUMNS, "rows")


async def _flush(session: AsyncSession, batch: _Batch) -> None:
    """Write the batch's inbox rows and new aggregate versions (an upsert that keeps the greater):
    one statement on PostgreSQL, with the writes the transaction deferred (``defer_write``: the
    hub's render), one bulk statement each elsewhere."""
    versions = [{"aggregate_type": t, "aggregate_id": a, "version": v} for (t, a), v in batch.versions.items()]
    inbox = batch.inbox
    if is_postgres(session):
        upsert, insert = _pg_flush()
        writes = [(upsert, {"versions": _json_rows(versions, _VERSION_COLUMNS)})] if versions else []
        if inbox:
            writes.append((insert, {"rows": _json_rows(inbox, _INBOX_COLUMNS)}))
        await run_deferred(session, writes)
    else:
        await bulk_insert(session, _INBOX, inbox)
        await bulk_upsert(
            session, _VERSIONS, versions, key=["aggregate_type", "aggregate_id"], update_existing=_keep_greater
        )
    batch.stored.update(batch.versions)
    batch.inbox.clear()
    batch.versions.clear()
    batch.versioned.clear()


def _position_id(record: ConsumerRecord[Any, Any]) -> str:
    """An inbox id for a record without a usable event id: where it was in the log."""
    digest = hashlib.sha256(f"{record.topic}:{record.partition}:{record.offset}".encode()).hexdigest()
    return f"pos:{digest[:48]}"


def _inbox(record: ConsumerRecord[Any, Any], event_id: str, event_type: str, status: str,
           error: str | None, now: datetime) -> dict[str, Any]:  # fmt: skip
    return {
        "event_id": event_id,
        "event_type": event_type,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "status": status,
        "error": error,
        "processed_at": now,
    }
