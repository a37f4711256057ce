"""Transactional outbox: the event row commits with the state change; a relay publishes it.

Writer side: :func:`add_event` inserts a row in the caller's session (same transaction),
carrying the CloudEvents headers and the current ``traceparent``.

Relay side: :class:`OutboxRelay` wakes right after commits (``wake()``, wired as a unit-of-work
``after_commit`` callback) and also polls. It publishes with an idempotent producer
(``acks=all``), waits for the broker's acks, then marks the rows. A crash between publish and
mark re-publishes the same event ids, which consumers' inboxes drop: at-least-once delivery,
effectively-once effects. Rows keep the contract's logical topic; the relay sends each one to
``topic_prefix + row.topic`` (``ZT_KAFKA_TOPIC_PREFIX``: a namespace per environment).

Several relays on PostgreSQL: each claims rows with ``FOR UPDATE SKIP LOCKED`` and then keeps,
per aggregate, only the rows that are the oldest unpublished ones of that aggregate (a row
whose predecessor is held by another relay waits for the next round), so one aggregate's
events are never reordered. On SQLite run one relay per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from opentelemetry import metrics, propagate, trace
from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.kit.db import Base, BigIntPK, is_sqlite, sessionmaker, write_lock
from services.kit.events import build_record
from services.kit.lifecycle import cancel_and_wait
from services.kit.logging import get_logger
from services.kit.telemetry import context_from_traceparent, current_traceparent

log = get_logger("zhongtai.outbox")
_tracer = trace.get_tracer("zhongtai.outbox")
_meter = metrics.get_meter("zhongtai.outbox")
_published = _meter.create_counter("outbox.published", unit="{event}", description="events published")
_lag = _meter.create_histogram("outbox.relay.lag", unit="ms", description="commit to broker ack")
_backlog: dict[str, int] = {}
_meter.create_observable_gauge(
    "outbox.backlog",
    callbacks=[lambda _: [metrics.Observation(v, {"relay": k}) for k, v in _backlog.items()]],
    unit="{event}",
    description="unpublished outbox rows seen by the relay",
)


class OutboxRow(Base):
    """One event waiting to be (or already) published."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(200))
    aggregate_type: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    aggregate_version: Mapped[int] = mapped_column(BigInteger)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[str] = mapped_column(Text)
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_outbox_pending", "published_at", "id"),
        Index("ix_outbox_aggregate", "aggregate_id", "id"),
    )


def add_event(
    session: AsyncSession,
    payload: Message,
    *,
    source: str,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    subject: str | None = None,
) -> OutboxRow:
    """Stage an event in the caller's transaction (publish happens only if it commits)."""
    traceparent = current_traceparent()
    record = build_record(
        payload,
        source=source,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=version,
        subject=subject,
        traceparent=traceparent,
    )
    row = OutboxRow(
        event_id=record.event_id,
        event_type=record.event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        topic=record.topic,
        key=record.key,
        payload=record.value,
        headers=orjson.dumps({k: v.decode() for k, v in record.headers}).decode(),
        traceparent=traceparent,
        created_at=datetime.now(UTC),
        attempts=0,
    )
    session.add(row)
    return row


_OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]


def _publishable(claimed: Sequence[Any], first_foreign: dict[str, int]) -> list[Any]:
    """Per aggregate, the claimed rows that come before its oldest pending row outside the batch.

    ``first_foreign`` maps an aggregate to the smallest id of its pending rows that this batch
    did not claim (held by another relay, or not visible yet); rows after it must wait.
    """
    rows = []
    for row in claimed:
        foreign = first_foreign.get(row.aggregate_id)
        if foreign is None or row.id < foreign:
            rows.append(row)
    return rows


class OutboxRelay:
    """Publishes outbox rows to Kafka; ``start()``/``stop()``, ``wake()`` after commits."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        name: str = "relay",
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        owns_producer: bool = False,
        topic_prefix: str = "",
        retention_s: float = 3600.0,
    ) -> None:
        self._engine = engine
        # Rows keep the contract's logical topic; the broker's name is the namespaced one.
        self._topic_prefix = topic_prefix
        self._sessions = sessionmaker(engine)
        self._producer = producer
        self._name = name
        self._batch_size = batch_size
        self._poll = poll_interval_s
        self._owns_producer = owns_producer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._producer_started = False
        # Published rows are kept this long (for audits and replays by hand), then purged.
        self._retention_s = retention_s
        self._next_purge = 0.0
        self.published_total = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await cancel_and_wait(task)
        if self._owns_producer:
            self._owns_producer = False
            # Also closes a producer whose start was interrupted (it holds connections).
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _start_producer(self) -> None:
        """Connect in the background: a broker that is down delays publishing, never the service."""
        delay = 0.5
        while True:
            try:
                await self._producer.start()
                self._producer_started = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay cannot reach Kafka yet", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _run(self) -> None:
        if self._owns_producer:
            await self._start_producer()
        backoff = self._poll
        while not self._stopping:
            try:
                while await self.publish_once() >= self._batch_size:
                    pass  # drain a backlog without waiting
                if time.monotonic() >= self._next_purge:
                    await self.purge_published()
                    self._next_purge = time.monotonic() + 60.0
                backoff = self._poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay round failed; will retry", error=type(exc).__name__, detail=str(exc)[:200])
                backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()

    async def purge_published(self, limit: int = 5000) -> int:
        """Delete rows published more than ``retention_s`` ago (bounded per call); returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention_s)
        oldest = (
            select(_OUTBOX.c.id)
            .where(_OUTBOX.c.published_at.is_not(None), _OUTBOX.c.published_at < cutoff)
            .order_by(_OUTBOX.c.id)
            .limit(limit)
        )
        lock = write_lock(self._engine)
        async with lock if lock is not None else contextlib.nullcontext(), self._engine.begin() as conn:
            result = await conn.execute(delete(_OUTBOX).where(_OUTBOX.c.id.in_(oldest.scalar_subquery())))
        return int(result.rowcount or 0)

    async def publish_once(self) -> int:
        """Publish one batch; returns how many rows were claimed (0 when idle)."""
        if is_sqlite(self._engine):
            return await self._publish_sqlite()
        return await self._publish_locked()

    async def _publish_locked(self) -> int:
        async with self._sessions() as session, session.begin():
            claimed = (
                await session.execute(
                    select(_OUTBOX)
                    .where(_OUTBOX.c.published_at.is_(None))
                    .order_by(_OUTBOX.c.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not claimed:
                _backlog[self._name] = 0
                return 0
            # Older pending rows of the same aggregates that this batch did not claim (another
            # relay holds them, or they are not visible yet): rows behind them must wait.
            # Not a correlated subquery: its cost must not depend on the planner's statistics.
            mine = {row.id for row in claimed}
            older = (
                await session.execute(
                    select(_OUTBOX.c.aggregate_id, func.min(_OUTBOX.c.id))
                    .where(
                        _OUTBOX.c.published_at.is_(None),
                        _OUTBOX.c.aggregate_id.in_({row.aggregate_id for row in claimed}),
                        _OUTBOX.c.id <= max(mine),
                        _OUTBOX.c.id.not_in(mine),
                    )
                    .group_by(_OUTBOX.c.aggregate_id)
                )
            ).all()
            rows = _publishable(claimed, {agg: first for agg, first in older})
            _backlog[self._name] = len(claimed)
            if rows:
                await self._send(rows)
                await session.execute(
                    update(_OUTBOX).where(_OUTBOX.c.id.in_([r.id for r in rows])).values(published_at=datetime.now(UTC))
                )
            return len(claimed)

    async def _publish_sqlite(self) -> int:
        # Read without holding SQLite's single write lock during the broker round trip.
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(_OUTBOX)
                    .where(OutboxRow.published_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self._batch_size)
                )
            ).all()
        # (closing the session keeps the rows' loaded state; a rollback would expire it)
        _backlog[self._name] = len(rows)
        if not rows:
            return 0
        await self._send(rows)
        lock = write_lock(self._engine)
        async with (
            lock if lock is not None else contextlib.nullcontext(),
            self._sessions() as session,
            session.begin(),
        ):
            await session.execute(
                update(_OUTBOX).where(_OUTBOX.c.id.in_([r.id for r in rows])).values(published_at=datetime.now(UTC))
            )
        return len(rows)

    async def _send(self, rows: Sequence[Any]) -> None:
        # One PRODUCER span per event, a child of the request that caused it (its traceparent is
        # stored in the row), ended when the broker acked. The record carries that span's
        # context, so the consumer's processing span continues the same trace: one trace id
        # from the HTTP request, through the relay, to the view update.
        spans: list[trace.Span] = []
        futures: list[Any] = []
        send = self._producer.send
        prefix = self._topic_prefix
        try:
            for row in rows:
                topic = prefix + row.topic
                span = _tracer.start_span(
                    f"{topic} publish",
                    context=context_from_traceparent(row.traceparent),
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": topic,
                        "messaging.message.id": row.event_id,
                    },
                )
                spans.append(span)
                headers = orjson.loads(row.headers)
                carrier: dict[str, str] = {}
                propagate.inject(carrier, context=trace.set_span_in_context(span))
                headers.update(carrier)
                futures.append(
                    await send(
                        topic, value=row.payload, key=row.key, headers=[(k, v.encode()) for k, v in headers.items()]
                    )
                )
            await asyncio.gather(*futures)  # every ack, or raise and leave the rows unpublished
        except BaseException as exc:
            for span in spans:
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                span.end()
            raise
        for span in spans:
            span.end()
        now = time.time()
        for row in rows:
            created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            _lag.record((now - created.timestamp()) * 1000, {"topic": row.topic})
        _published.add(len(rows), {"relay": self._name})
        self.published_total += len(rows)
