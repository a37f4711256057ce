"""Transactional outbox: the event row commits with the state change; a relay publishes it.

Writer side: :func:`add_event` inserts a row in the caller's session (same transaction),
carrying the CloudEvents headers and the current ``traceparent``.

Relay side: :class:`OutboxRelay` wakes right after commits (``wake()``, wired as a unit-of-work
``after_commit`` callback, for a relay in the writer's process; on PostgreSQL also through
LISTEN/NOTIFY: :func:`add_event` makes the transaction NOTIFY :data:`NOTIFY_CHANNEL`, which
PostgreSQL delivers at commit, for relays in other processes — unless a relay in the writer's own
process publishes that database, :func:`relayed_in_process`: then the wake-up is local and the
NOTIFY, a round trip and PostgreSQL's notification queue per write, is left out, ADR 0027) and
also polls. It publishes with an idempotent producer
(``acks=all``), waits for the broker's acks, then marks the rows. A crash between publish and
mark re-publishes the same event ids, which consumers' inboxes drop: at-least-once delivery,
effectively-once effects. Rows keep the contract's logical topic; the relay sends each one to
``topic_prefix + row.topic`` (``ZT_KAFKA_TOPIC_PREFIX``: a namespace per environment).

Several relays on PostgreSQL: each claims rows with ``FOR UPDATE SKIP LOCKED`` and then keeps,
per aggregate, only the rows that are the oldest unpublished ones of that aggregate (a row
whose predecessor is held by another relay, or by another open round of the same relay, waits
for the next round), so one aggregate's events are never reordered. A relay overlaps up to
``max_in_flight`` rounds (each on its own connection): new events are claimed while an earlier
round waits for its acks. On SQLite run one relay per database (one round at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import weakref
from collections.abc import AsyncIterator, Sequence
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
    bindparam,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.kit.db import (
    WAKES_AFTER_COMMIT,
    Base,
    BigIntPK,
    in_list,
    is_sqlite,
    on_driver,
    sessionmaker,
    write_lock,
)
from services.kit.events import KafkaRecord, build_record
from services.kit.kafka import Outgoing, send_all
from services.kit.lifecycle import cancel_and_wait
from services.kit.logging import get_logger
from services.kit.outbox_claim import PG_CLAIM as _PG_CLAIM
from services.kit.outbox_claim import driver_round
from services.kit.outbox_claim import publishable as _publishable
from services.kit.reads import compiled_for
from services.kit.staging import Staging, stage_insert
from services.kit.telemetry import context_from_traceparent, current_traceparent, start_span

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
        # The relay's claim scans pending rows only (see the services' migration 0002).
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )


#: PostgreSQL channel on which writers NOTIFY at commit and relays LISTEN (per database).
NOTIFY_CHANNEL = "zt_outbox"
_NOTIFY_PENDING = "zt_outbox_notify"
_OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]


#: Connection pools of the engines a relay in this process publishes (it is woken by the unit of
#: work's ``after_commit`` callback): their transactions do not NOTIFY (ADR 0027).
_RELAYED_IN_PROCESS: weakref.WeakSet[Any] = weakref.WeakSet()


def relayed_in_process(engine: AsyncEngine) -> None:
    """Say that a relay in this process publishes this engine's outbox and is woken by the units of
    work's ``after_commit`` callbacks: their writes then skip the NOTIFY (relays elsewhere still
    poll; a unit of work without callbacks still notifies)."""
    _RELAYED_IN_PROCESS.add(engine.sync_engine.pool)


#: What a transaction that staged events sends before its COMMIT (see :func:`notify_needed`).
NOTIFY_SQL = f"NOTIFY {NOTIFY_CHANNEL}"


def notify_needed(info: dict[str, Any], dialect: str, pool: Any) -> bool:
    """Whether a transaction (its ``info``) must NOTIFY before it commits: it staged events, on
    PostgreSQL, and no relay in this process is woken by its ``after_commit`` callbacks. Once."""
    if not info.pop(_NOTIFY_PENDING, False):
        return False
    woken_here = info.get(WAKES_AFTER_COMMIT) and pool in _RELAYED_IN_PROCESS
    return dialect == "postgresql" and not woken_here


@event.listens_for(Session, "before_commit")
def _notify_relays(session: Session) -> None:
    """NOTIFY in the transaction that staged events: PostgreSQL delivers it only if it commits."""
    if session.info.get(_NOTIFY_PENDING):
        conn = session.connection()
        if notify_needed(session.info, conn.dialect.name, conn.engine.pool):
            conn.exec_driver_sql(NOTIFY_SQL)


@event.listens_for(Session, "after_rollback")
def _forget_notify(session: Session) -> None:
    session.info.pop(_NOTIFY_PENDING, None)


def add_event(
    session: Staging,
    payload: Message,
    *,
    source: str,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    subject: str | None = None,
) -> KafkaRecord:
    """Stage an event in the caller's transaction (publish happens only if it commits).

    The outbox row is written at commit, with the unit of work's other staged rows, in one
    round trip (:func:`services.kit.staging.stage_insert`, ADR 0031). Returns the event's record
    (its ``event_id``, topic, key, headers)."""
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
    stage_insert(
        session,
        _OUTBOX,
        {
            "event_id": record.event_id,
            "event_type": record.event_type,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "aggregate_version": version,
            "topic": record.topic,
            "key": record.key,
            "payload": record.value,
            "headers": orjson.dumps({k: v.decode() for k, v in record.headers}).decode(),
            "traceparent": traceparent,
            "created_at": datetime.now(UTC),
            "attempts": 0,
        },
    )
    session.info[_NOTIFY_PENDING] = True
    return record


#: A relay keeps a round's connection for the next round if that comes within this time.
_KEEP_CONNECTION_S = 10.0

_PG_MARK = (
    update(_OUTBOX)
    .where(in_list("postgresql", _OUTBOX.c.id, "ids"))
    .values(published_at=bindparam("now", type_=_OUTBOX.c.published_at.type))
)


def _publish_attributes(topic: str, event_id: str) -> dict[str, str]:
    """A relay PRODUCER span's attributes."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.message.id": event_id,
    }


class OutboxRelay:
    """Publishes outbox rows to Kafka; ``start()``/``stop()``, ``wake()`` after commits.

    On PostgreSQL up to ``max_in_flight`` rounds (claim, send, wait for the acks, mark, commit)
    overlap, each on its own connection: an event committed while a round waits for its acks is
    claimed at once by the next round instead of queueing behind it. A row whose aggregate has
    an older row in another open round is held back (the claim sees that row as pending) and
    retried as soon as a round commits, so overlapping rounds never reorder an aggregate. The
    relay also LISTENs on :data:`NOTIFY_CHANNEL` (writers NOTIFY in their transaction, see
    :func:`add_event`), so a relay in another process wakes at commit too; polling stays the
    fallback.
    """

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
        max_in_flight: int = 2,
        listen: bool = True,
        notify_coalesce_s: float = 0.003,
    ) -> None:
        self._engine = engine
        # A NOTIFY (another process committed) starts a round this much later, so one round
        # takes the rows of several commits: at 500 commits/s a round per NOTIFY cost the relay
        # ~60 % of a core (most of it in socket writes), and that CPU is what delayed the slow
        # events. A local wake() (this process's own commit) is served at once, and ends a
        # coalescing wait already under way.
        self._notify_coalesce = notify_coalesce_s
        self._local_wake = asyncio.Event()
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
        # SQLite has no row locks: one round at a time there.
        self._max_in_flight = 1 if is_sqlite(engine) else max(1, max_in_flight)
        self._listen_enabled = listen and not is_sqlite(engine)
        # PostgreSQL + asyncpg without statement spans: a round's statements on the driver connection.
        self._driver_sql = compiled_for(_PG_CLAIM, engine.dialect) if on_driver(engine) else None
        self._rounds: set[asyncio.Task[None]] = set()
        self._idle: list[tuple[AsyncConnection, float]] = []  # connections kept between rounds
        self._failures = 0
        self._draining = False  # the last round claimed a full batch
        self._commits = 0  # publishing rounds committed so far
        self._held_back = False  # a round held rows back behind a row of a round still open
        # Published rows are kept this long (for audits and replays by hand), then purged.
        self._retention_s = retention_s
        self._next_purge = 0.0
        self.published_total = 0
        self.listening = asyncio.Event()  # set while the LISTEN connection is up (tests, health)

    def wake(self) -> None:
        """Run a round now: this process committed outbox rows (call it after the commit)."""
        self._local_wake.set()
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
            self.wake()
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
        listener = (
            asyncio.create_task(self._listen(), name=f"outbox-listen-{self._name}") if self._listen_enabled else None
        )
        purge: asyncio.Task[None] | None = None
        slots = asyncio.Semaphore(self._max_in_flight)
        try:
            if self._owns_producer:
                await self._start_producer()
            self.wake()  # a first round at once: rows may be waiting since before the start
            while not self._stopping:
                await slots.acquire()
                backoff = min(self._poll * 2**self._failures, 10.0) if self._failures else self._poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
                if self._notify_coalesce and self._wake.is_set() and not (self._local_wake.is_set() or self._draining):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._local_wake.wait(), self._notify_coalesce)
                self._wake.clear()
                self._local_wake.clear()
                if self._draining and self._rounds:
                    # A backlog: overlapping full batches would mostly hold each other's rows
                    # back (same aggregates), so drain one batch after the other.
                    await asyncio.wait(set(self._rounds))
                if self._stopping:
                    slots.release()
                    break
                round_ = asyncio.create_task(self._round(slots))
                self._rounds.add(round_)
                round_.add_done_callback(self._rounds.discard)
                if time.monotonic() >= self._next_purge and (purge is None or purge.done()):
                    self._next_purge = time.monotonic() + 60.0
                    purge = asyncio.create_task(self._purge_quietly())
        finally:
            await cancel_and_wait(listener)
            await cancel_and_wait(purge)
            for round_ in list(self._rounds):
                await cancel_and_wait(round_)
            await self._close_idle()

    async def _round(self, slots: asyncio.Semaphore) -> None:
        try:
            claimed = await self.publish_once()
            self._failures = 0
            self._draining = claimed >= self._batch_size
            if self._draining:
                self.wake()  # drain a backlog without waiting
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failures = min(self._failures + 1, 8)
            log.warning("relay round failed; will retry", error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            slots.release()

    async def _purge_quietly(self) -> None:
        try:
            await self.purge_published()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("outbox purge failed; will retry", error=type(exc).__name__, detail=str(exc)[:200])

    async def _listen(self) -> None:
        """LISTEN for writers' commits (PostgreSQL); reconnect when the connection drops."""
        delay = 0.5
        while True:
            closed = asyncio.Event()
            try:
                async with self._engine.connect() as conn:
                    raw: Any = (await conn.get_raw_connection()).driver_connection
                    try:
                        raw.add_termination_listener(lambda _conn, closed=closed: closed.set())
                        await raw.add_listener(NOTIFY_CHANNEL, self._notified)
                        self.listening.set()
                        self.wake()  # commits made while nobody listened
                        delay = 0.5
                        await closed.wait()
                    finally:
                        self.listening.clear()
                        # The connection holds a LISTEN: never hand it back to the pool.
                        await conn.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay cannot LISTEN; polling meanwhile", error=type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _notified(self, *_: object) -> None:
        self._wake.set()

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

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one round, kept for the next one while rounds keep coming.

        Saves the pool's checkout on each round; a connection idle for more than
        :data:`_KEEP_CONNECTION_S` goes back through the pool (which pings it if it sat idle there).
        """
        conn = None
        now = time.monotonic()
        while self._idle and conn is None:
            kept, last_used = self._idle.pop()
            if now - last_used < _KEEP_CONNECTION_S:
                conn = kept
            else:
                await kept.close()
        if conn is None:
            conn = await self._engine.connect()
        try:
            yield conn
        except BaseException:
            await conn.close()  # back to the pool, which drops it if it is broken
            raise
        self._idle.append((conn, time.monotonic()))

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _claim_and_publish(self, conn: AsyncConnection) -> tuple[list[Any], list[Any]]:
        """One round's transaction: claim, publish (the acks), mark. (claimed, published)"""
        if self._driver_sql is None:
            async with conn.begin():
                claimed: list[Any] = list((await conn.execute(_PG_CLAIM, {"limit": self._batch_size})).all())
                rows = _publishable(claimed, {r.aggregate_id: r.first_foreign for r in claimed if r.first_foreign})
                if rows:
                    await self._send(rows)
                    await conn.execute(_PG_MARK, {"ids": [r.id for r in rows], "now": datetime.now(UTC)})
            return claimed, rows
        # The same round on the connection's asyncpg connection (ADR 0042).
        return await driver_round(conn, self._driver_sql, self._batch_size, self._send)

    async def _publish_locked(self) -> int:
        commits_before = self._commits
        async with self._connection() as conn:
            claimed, rows = await self._claim_and_publish(conn)
        _backlog[self._name] = len(claimed)
        if not claimed:
            return 0
        if rows:
            self._commits += 1
            if self._held_back:  # rows waited behind one of this relay's rounds: retry now
                self._held_back = False
                self.wake()
        if len(rows) < len(claimed):
            # Held back behind an older row of their aggregate. If a round committed since this
            # one began, that row may be published now: retry at once; else retry when the next
            # round commits (or at the poll, when another relay holds it).
            if self._commits - commits_before > (1 if rows else 0):
                self.wake()
            else:
                self._held_back = True
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
        # from the HTTP request, through the relay, to the view update. (A process that exports no
        # spans sends the same ids from an ids-only span: ADR 0030, 0048.)
        spans: list[trace.Span] = []
        records: list[Outgoing] = []
        prefix = self._topic_prefix
        try:
            for row in rows:
                topic = prefix + row.topic
                span = start_span(
                    _tracer,
                    f"{topic} publish",
                    context_from_traceparent(row.traceparent),
                    trace.SpanKind.PRODUCER,
                    functools.partial(_publish_attributes, topic, row.event_id),
                )
                spans.append(span)
                headers = orjson.loads(row.headers)
                carrier: dict[str, str] = {}
                propagate.inject(carrier, context=trace.set_span_in_context(span))
                headers.update(carrier)
                records.append((topic, row.key, row.payload, [(k, v.encode()) for k, v in headers.items()]))
            await send_all(self._producer, records)  # every ack, or raise and leave the rows unpublished
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
