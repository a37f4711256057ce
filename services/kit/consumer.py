"""Idempotent Kafka consumers: inbox, bounded retries, dead letters, offsets after commits.

For each partition's batch, :class:`InboxConsumer` applies every new event in ONE database
transaction (handler + inbox row + aggregate version), commits it, and only then commits
offset+1 to Kafka. Duplicates (an event id already in the inbox) and stale versions (not newer
than the aggregate's last applied version) are no-ops. If the batch fails, its events are
retried one by one; an event that still fails after ``max_attempts`` goes to the dead-letter
topic ``<group>.dlq`` with the error and its original headers, is recorded in the inbox as
dead, and the partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from opentelemetry import metrics, trace
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.kit.db import Base, UnitOfWork
from services.kit.events import PoisonEvent, ReceivedEvent, parse_record
from services.kit.kafka import ensure_topics, make_consumer
from services.kit.logging import get_logger
from services.kit.telemetry import context_from_traceparent

log = get_logger("zhongtai.consumer")
_tracer = trace.get_tracer("zhongtai.consumer")
_meter = metrics.get_meter("zhongtai.consumer")
_processed = _meter.create_counter("consumer.events", unit="{event}", description="events handled, by outcome")
_dead = _meter.create_counter("consumer.dlq", unit="{event}", description="events sent to the dead-letter topic")
_lag_by_partition: dict[tuple[str, str, int], int] = {}
_meter.create_observable_gauge(
    "consumer.lag",
    callbacks=[
        lambda _: [
            metrics.Observation(lag, {"group": g, "topic": t, "partition": p})
            for (g, t, p), lag in _lag_by_partition.items()
        ]
    ],
    unit="{event}",
    description="records behind the high watermark",
)

Handler = Callable[[AsyncSession, ReceivedEvent], Awaitable[None]]


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


# Per-transaction caches in ``session.info``: the session does not autoflush, so rows added
# earlier in the same batch are invisible to ``session.get`` — without these, two events of one
# aggregate (or a redelivered event) in one batch would insert the same key twice and fail it.
_SEEN = "kit.inbox_seen"  # event_id -> already in the inbox (or added in this transaction)
_VERSIONS = "kit.aggregate_versions"  # (type, id) -> AggregateVersion row, or None if absent


async def _prefetch(session: AsyncSession, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """Two queries for the whole batch instead of two per event (from the raw headers)."""
    headers = [dict(r.headers or ()) for r in records]
    ids = {h["ce_id"].decode() for h in headers if h.get("ce_id")}
    aggs = {(h["ce_aggregatetype"].decode(), h["ce_aggregateid"].decode())
            for h in headers if h.get("ce_aggregatetype") and h.get("ce_aggregateid")}  # fmt: skip
    seen: dict[str, bool] = session.info.setdefault(_SEEN, {})
    if ids:
        present = set((await session.scalars(select(InboxRow.event_id).where(InboxRow.event_id.in_(ids)))).all())
        seen.update({i: i in present for i in ids})
    versions: dict[tuple[str, str], AggregateVersion | None] = session.info.setdefault(_VERSIONS, {})
    if aggs:
        rows = await session.scalars(
            select(AggregateVersion).where(AggregateVersion.aggregate_id.in_({a for _, a in aggs}))
        )
        found = {(r.aggregate_type, r.aggregate_id): r for r in rows.all()}
        versions.update({key: found.get(key) for key in aggs})


async def _seen(session: AsyncSession, event_id: str) -> bool:
    seen: dict[str, bool] = session.info.setdefault(_SEEN, {})
    if event_id not in seen:
        seen[event_id] = (await session.get(InboxRow, event_id)) is not None
    return seen[event_id]


async def _is_stale(session: AsyncSession, event: ReceivedEvent) -> bool:
    """True if not newer than the last applied version; records the new version otherwise."""
    if not event.aggregate_type or not event.version:
        return False
    key = (event.aggregate_type, event.aggregate_id)
    versions: dict[tuple[str, str], AggregateVersion | None] = session.info.setdefault(_VERSIONS, {})
    row = versions[key] if key in versions else await session.get(AggregateVersion, key)
    if row is not None and row.version >= event.version:
        return True
    if row is None:
        row = AggregateVersion(aggregate_type=event.aggregate_type, aggregate_id=event.aggregate_id,
                               version=event.version)  # fmt: skip
        session.add(row)
    else:
        row.version = event.version
    versions[key] = row
    return False


def _position_id(record: ConsumerRecord[Any, Any]) -> str:
    """An inbox id for a record without a usable event id: where it was in the log."""
    digest = hashlib.sha256(f"{record.topic}:{record.partition}:{record.offset}".encode()).hexdigest()
    return f"pos:{digest[:48]}"


def _inbox(record: ConsumerRecord[Any, Any], event_id: str, event_type: str, status: str,
           error: str | None = None) -> InboxRow:  # fmt: skip
    return InboxRow(
        event_id=event_id,
        event_type=event_type,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        status=status,
        error=error,
        processed_at=datetime.now(UTC),
    )


class InboxConsumer:
    """One consumer group applying events through the inbox; ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        dlq_producer: AIOKafkaProducer,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        max_records: int = 500,
        client_id: str | None = None,
        after_commit: Callable[[list[ReceivedEvent]], Awaitable[None]] | None = None,
        before_commit: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._bootstrap = bootstrap_servers
        self._group = group_id
        self._topics = list(topics)
        self._handler = handler
        self._dlq = dlq_producer
        self.dlq_topic = f"{group_id}.dlq"
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_s
        self._max_records = max_records
        self._client_id = client_id or group_id
        self._after_commit = after_commit
        # Runs in the batch's transaction right before it commits: a handler that buffers its
        # writes flushes them here in bulk (batch-apply), inside the same transaction as the inbox.
        self._before_commit = before_commit
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._dead_lettered: set[tuple[str, int, int]] = set()
        self.applied_total = 0
        self.dead_total = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        await ensure_topics(self._bootstrap, {self.dlq_topic: {}})
        self._consumer = make_consumer(
            self._bootstrap, *self._topics, group_id=self._group, client_id=self._client_id,
            max_poll_records=self._max_records,
        )  # fmt: skip
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
            for tp, records in batches.items():
                if records:
                    await self._process_partition(consumer, tp, records)
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    position = await consumer.position(tp)
                    _lag_by_partition[(self._group, tp.topic, tp.partition)] = max(0, high - position)

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
    ) -> None:
        applied: list[ReceivedEvent] = []
        try:
            async with UnitOfWork(self._engine) as uow:
                await _prefetch(uow.session, records)
                for record in records:
                    event = await self._apply(uow.session, record)
                    if event is not None:
                        applied.append(event)
                if self._before_commit is not None:
                    await self._before_commit(uow.session)
                await uow.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("batch failed; retrying one by one", topic=tp.topic, partition=tp.partition,
                        error=type(exc).__name__)  # fmt: skip
            applied = []
            for record in records:
                event = await self._process_one(record)
                if event is not None:
                    applied.append(event)
        await consumer.commit({tp: records[-1].offset + 1})
        self.applied_total += len(applied)
        if applied and self._after_commit is not None:
            await self._after_commit(applied)

    async def _apply(self, session: AsyncSession, record: ConsumerRecord[Any, Any]) -> ReceivedEvent | None:
        """Apply one record in the given transaction; None when it was a no-op or poison."""
        try:
            event = parse_record(
                list(record.headers or ()), record.value, key=record.key, topic=record.topic,
                partition=record.partition, offset=record.offset,
            )  # fmt: skip
        except PoisonEvent as exc:
            # Never decodable, so retrying cannot help: dead-letter at once.
            await self._dead_letter(record, str(exc), attempts=1)
            session.add(_inbox(record, _position_id(record), "unknown", "dead", str(exc)[:1000]))
            return None
        if await _seen(session, event.id):
            _processed.add(1, {"group": self._group, "outcome": "duplicate"})
            return None
        with _tracer.start_as_current_span(
            f"{record.topic} process",
            context=context_from_traceparent(event.traceparent),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.consumer.group.name": self._group,
                "messaging.destination.name": record.topic,
                "messaging.message.id": event.id,
                "messaging.kafka.offset": record.offset,
                "zhongtai.event_type": event.type,
            },
        ):
            if await _is_stale(session, event):
                session.add(_inbox(record, event.id, event.type, "stale"))
                session.info.setdefault(_SEEN, {})[event.id] = True
                _processed.add(1, {"group": self._group, "outcome": "stale"})
                return None
            await self._handler(session, event)
        session.add(_inbox(record, event.id, event.type, "applied"))
        session.info.setdefault(_SEEN, {})[event.id] = True
        _processed.add(1, {"group": self._group, "outcome": "applied"})
        return event

    async def _process_one(self, record: ConsumerRecord[Any, Any]) -> ReceivedEvent | None:
        last_error = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with UnitOfWork(self._engine) as uow:
                    event = await self._apply(uow.session, record)
                    if self._before_commit is not None:
                        await self._before_commit(uow.session)
                    await uow.commit()
                return event
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"[:1000]
                log.warning("event failed", topic=record.topic, partition=record.partition, offset=record.offset,
                            attempt=attempt, error=type(exc).__name__)  # fmt: skip
                await asyncio.sleep(self._backoff * attempt)
        await self._dead_letter(record, last_error, attempts=self._max_attempts)
        async with UnitOfWork(self._engine) as uow:
            event_id = dict(record.headers or ()).get("ce_id", b"").decode()[:64] or _position_id(record)
            if not await _seen(uow.session, event_id):
                uow.session.add(_inbox(record, event_id, "unknown", "dead", last_error))
            await uow.commit()
        return None

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: str, *, attempts: int) -> None:
        position = (record.topic, record.partition, record.offset)
        if position in self._dead_lettered:
            return  # already sent in an earlier (rolled back) attempt at this batch
        if len(self._dead_lettered) > 10_000:
            self._dead_lettered.clear()
        self._dead_lettered.add(position)
        headers = [
            *(record.headers or ()),
            ("dlq_error", error.encode()[:2000]),
            ("dlq_group", self._group.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_attempts", str(attempts).encode()),
        ]
        await self._dlq.send_and_wait(self.dlq_topic, value=record.value, key=record.key, headers=headers)
        self.dead_total += 1
        _dead.add(1, {"group": self._group, "topic": record.topic})
        log.error("event dead-lettered", topic=record.topic, partition=record.partition, offset=record.offset,
                  dlq=self.dlq_topic, attempts=attempts)  # fmt: skip
