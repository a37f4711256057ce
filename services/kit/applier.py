"""A consumer's database side: one batch of records applied in one transaction, through the inbox.

:class:`BatchApplier` stages a batch (opens its transaction, loads its inbox entries and
aggregate versions, runs the handlers or the projection's ``fold``), then commits it (the
projection's ``apply``, the inbox rows, the commit, the projection's ``committed``), with a
processing span per event or one per batch. A record that can never be applied (poison, or one
that fails ``max_attempts`` times on its own) goes to the dead-letter topic and is recorded in the
inbox as dead. The Kafka side — polling, retries, offsets, supervision — is
:class:`services.kit.consumer.InboxConsumer`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiokafka import ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.kit.db import UnitOfWork
from services.kit.dlq import DeadLetters
from services.kit.events import PoisonEvent, ReceivedEvent
from services.kit.faults import is_infrastructure_error
from services.kit.inbox import (
    Decoded,
    _Batch,
    _decode,
    _flush,
    _inbox,
    _is_stale,
    _load,
    _Polled,
    _position_id,
    _records,
    _seen,
    _stale_if_loaded,
)
from services.kit.logging import get_logger
from services.kit.telemetry import context_from_traceparent, start_span

__all__ = ["BatchApplier", "DeadLetteredHook", "Handler", "Projection"]

log = get_logger("zhongtai.consumer")
_processed = metrics.get_meter("zhongtai.consumer").create_counter(
    "consumer.events", unit="{event}", description="events handled, by outcome"
)

Handler = Callable[[AsyncSession, ReceivedEvent], Awaitable[None]]

Folded = TypeVar("Folded")
Applied = TypeVar("Applied")


class Projection(Protocol[Folded, Applied]):
    """A consumer's fold as a port, called once per batch (docs/adr/0012-projection-port.md).

    The consumer decides when each step runs; the projection does no I/O but in ``apply``:

    - ``fold(events)``: the batch's new events (duplicates and stale versions already dropped),
      in offset order per partition, folded in memory. Runs while the batch is staged —
      overlapped (ADR 0006), while the previous batch is still being written — so it must not
      depend on what that batch writes. May raise for an event that can never be applied: the
      batch then goes one record at a time, and that record to the dead-letter topic.
    - ``apply(session, folded)``: writes in the batch's transaction, after the previous batch
      committed, right before the inbox rows are written and the transaction commits. Returns
      what ``committed`` is told, or None for nothing.
    - ``committed(applied)``: right after that transaction committed (before the offsets are
      committed to Kafka); never for a batch that rolled back. Must not raise (it is logged).

    Optionally, ``dead_lettered(session, record, event)`` (:class:`DeadLetteredHook`): a record
    this consumer sent to the dead-letter topic, in the transaction that records it as dead in the
    inbox (once per record: not for a redelivery of one already recorded). ``event`` is the
    decoded event, or None for a record that never decoded. For a projection whose state must
    not outlive an event it could not apply (ADR 0065: the product's eligibility replica forgets
    the customer). It runs in a savepoint: if it fails for anything but the infrastructure, it is
    logged and the record is still recorded as dead, so the consumer never sticks on it.
    """

    def fold(self, events: Sequence[ReceivedEvent]) -> Folded: ...

    async def apply(self, session: AsyncSession, folded: Folded) -> Applied | None: ...

    def committed(self, applied: Applied) -> None: ...


class DeadLetteredHook(Protocol):
    """A projection's optional ``dead_lettered`` step (see :class:`Projection`)."""

    async def __call__(
        self, session: AsyncSession, record: ConsumerRecord[Any, Any], event: ReceivedEvent | None
    ) -> None: ...


#: Links on a batch's processing span (OpenTelemetry's default span limit).
_MAX_LINKS = 128
#: :meth:`BatchApplier._apply_loaded`: the event needs :meth:`BatchApplier._apply`.
_NOT_LOADED = object()


@dataclass
class _Staged:
    """A batch applied in memory (lookups done, handlers or the projection's fold run) in its own
    open transaction, not yet written: ``marks`` = clock at the start, after the lookups, after
    the handlers; ``folded``: what the projection's ``fold`` made of it (None without one)."""

    batches: _Polled
    pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]]
    uow: UnitOfWork
    batch: _Batch
    applied: list[ReceivedEvent]
    span: trace.Span | None
    marks: list[float]
    folded: Any = None
    #: What its commit will store: the event ids it records in the inbox and the aggregate
    #: versions it applies (taken now: the write clears them from ``batch``).
    ids: frozenset[str] = field(init=False)
    versions: dict[tuple[str, str], int] = field(init=False)
    #: The task writing it (overlapped mode), once handed over.
    writing: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # its own, not carried ones: those with an inbox row, and those only a version records
        self.ids = frozenset(row["event_id"] for row in self.batch.inbox) | self.batch.versioned
        self.versions = dict(self.batch.versions)

    async def discard(self) -> None:
        """Roll back a batch that will not be written (it is read again)."""
        try:
            await self.uow.__aexit__(None, None, None)
        finally:
            if self.span is not None:
                self.span.set_attribute("zhongtai.discarded", True)
                self.span.end()


def _carry(batch: _Batch, before: _Staged) -> None:
    """Count what ``before`` will have stored when it commits (it commits before ``batch`` is
    written, or ``batch`` is thrown away): its events as in the inbox, its versions as stored."""
    batch.seen.update(dict.fromkeys(before.ids, True))
    for key, stored in batch.stored.items():
        newer = before.versions.get(key)
        if newer is not None and (stored is None or newer > stored):
            batch.stored[key] = newer


def _tally(batch: _Batch, outcome: str) -> None:
    """One more event of this outcome in the batch (the consumer.events counter, per batch)."""
    batch.outcomes[outcome] = batch.outcomes.get(outcome, 0) + 1


def _pairs(polled: _Polled) -> list[tuple[ConsumerRecord[Any, Any], Decoded]]:
    return [pair for partition in polled.values() for pair in partition]


def _failed(span: trace.Span | None, exc: BaseException) -> None:
    if span is not None and isinstance(exc, Exception):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class BatchApplier:
    """Applies batches of one consumer group's records to its database (see the module doc)."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        group_id: str,
        handler: Handler | None,
        projection: Projection[Any, Any] | None,
        dead_letters: DeadLetters,
        max_attempts: int,
        retry_backoff_s: float,
        trace_each_max: int,
        record_versioned: bool = True,
    ) -> None:
        if handler is not None and projection is not None:
            raise TypeError("an InboxConsumer takes a per-event handler or a projection, not both")
        self._engine = engine
        self._group = group_id
        self._handler = handler
        self._projection = projection  # per batch: fold while staged, apply before the commit, told after
        self.dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_s
        # Tracing: a batch of at most this many records gets a processing span per event, each
        # the child of its producer's span (live traffic: one trace from the channel's request to
        # the view). A bigger one (a backlog, a replay) gets ONE span for the batch, linked to the
        # events' producer spans: OpenTelemetry's messaging convention for batch processing, and
        # ~25 % of a bulk ingest's CPU saved (a span per event costs ~30 µs here).
        self._trace_each_max = trace_each_max
        # Resolved now (the process has set up its tracer provider): not the module's proxy.
        self._tracer = trace.get_tracer("zhongtai.consumer")
        self._record_versioned = record_versioned  # False: versions are the duplicate check (ADR 0049)
        self._on_dead: DeadLetteredHook | None = getattr(projection, "dead_lettered", None)

    async def stage(
        self,
        pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]],
        *,
        batches: _Polled | None = None,
        after: _Staged | None = None,
    ) -> _Staged:
        """Open a transaction, look up the records' inbox entries and aggregate versions, and run
        the handlers (or the projection's ``fold`` of the new events); the transaction stays open
        for :meth:`commit`. ``batches``: the poll the records came from (for its offsets);
        ``after``: a batch being written meanwhile, whose commit this one counts on (``_carry``)."""
        clock = time.perf_counter
        marks = [clock()]
        span = None if len(pairs) <= self._trace_each_max else self._batch_span(pairs)
        uow = UnitOfWork(self._engine)
        await uow.__aenter__()
        token = None if span is None else otel_context.attach(trace.set_span_in_context(span))
        applied: list[ReceivedEvent] = []
        try:
            batch = await _load(uow.session, [item for _, item in pairs], record_versioned=self._record_versioned)
            if after is not None:
                _carry(batch, after)
            marks.append(clock())
            # (a projection's batch under one span: most events are decided from what _load
            # loaded, without a coroutine each — 1.8 → 1.1 µs an event in isolation)
            loaded = span is not None and self._handler is None
            for record, item in pairs:
                event = self._apply_loaded(batch, record, item) if loaded else _NOT_LOADED
                if event is _NOT_LOADED:
                    event = await self._apply(uow.session, batch, record, item, traced=span is None)
                if event is not None:
                    applied.append(event)  # type: ignore[arg-type]
            folded = self._projection.fold(applied) if self._projection is not None and applied else None
            marks.append(clock())
        except BaseException as exc:
            _failed(span, exc)
            await uow.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        return _Staged(batches or {}, pairs, uow, batch, applied, span, marks, folded)

    async def commit(self, staged: _Staged) -> None:
        """Run the projection's ``apply``, write the inbox rows and versions, commit (or roll back and
        raise); then tell the projection it committed."""
        span, session = staged.span, staged.uow.session
        token = None if span is None else otel_context.attach(trace.set_span_in_context(span))
        result = None  # what the projection's ``apply`` returned
        try:
            if self._projection is not None and staged.folded is not None:
                result = await self._projection.apply(session, staged.folded)
            staged.marks.append(time.perf_counter())
            await _flush(session, staged.batch)
            await staged.uow.commit()
            if result is not None:
                self._committed(result)  # (at once: no await between the commit and the news)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            await staged.uow.__aexit__(None, None, None)  # (rolls back unless committed)
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                span.set_attribute("zhongtai.applied", len(staged.applied))
                span.end()
        self._count(staged.batch)

    async def transaction(
        self, pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]], marks: list[float]
    ) -> list[ReceivedEvent]:
        """Apply the records in one database transaction; the events applied (not no-ops).
        ``marks`` gets the clock after the lookups, the handlers and the projection's ``apply``."""
        staged = await self.stage(pairs)
        marks.extend(staged.marks[1:])
        await self.commit(staged)
        marks.extend(staged.marks[3:])
        return staged.applied

    async def process_one(self, record: ConsumerRecord[Any, Any]) -> ReceivedEvent | None:
        last_error = ""
        decoded = _decode(record)
        for attempt in range(1, self._max_attempts + 1):
            try:
                applied = await self.transaction([(record, decoded)], [])
                return applied[0] if applied else None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise  # the database or broker failed, not this event: never dead-letter it
                last_error = f"{type(exc).__name__}: {exc}"[:1000]
                log.warning("event failed", topic=record.topic, partition=record.partition, offset=record.offset,
                            attempt=attempt, error=type(exc).__name__)  # fmt: skip
                await asyncio.sleep(self._backoff * attempt)
        await self._dead_letter(record, last_error, attempts=self._max_attempts)
        async with UnitOfWork(self._engine) as uow:
            event_id = dict(record.headers or ()).get("ce_id", b"").decode()[:64] or _position_id(record)
            batch = _Batch()
            if not await _seen(uow.session, batch, event_id):
                batch.inbox.append(_inbox(record, event_id, "unknown", "dead", last_error, batch.now))
                await self._tell_dead_lettered(uow.session, record, decoded)
                await _flush(uow.session, batch)
            await uow.commit()
        return None

    def _committed(self, result: Any) -> None:
        """Tell the projection its batch committed (right away: before the offsets go to Kafka)."""
        assert self._projection is not None
        try:
            self._projection.committed(result)
        except Exception as exc:  # the batch is committed: a failing notification must not re-apply it
            log.warning("projection's committed hook failed", group=self._group, error=type(exc).__name__)

    def _batch_span(self, pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]]) -> trace.Span:
        """One processing span for a big batch, linked to (up to ``_MAX_LINKS``) events' producer
        spans: a trace of such an event shows where it was applied through the link."""
        links = []
        for _, item in pairs:
            if isinstance(item, ReceivedEvent) and item.traceparent:
                linked = trace.get_current_span(context_from_traceparent(item.traceparent)).get_span_context()
                if linked.is_valid:
                    links.append(trace.Link(linked))
                    if len(links) == _MAX_LINKS:
                        break
        topics = sorted({record.topic for record, _ in pairs})
        return self._tracer.start_span(
            "process" if len(topics) > 1 else f"{topics[0]} process",
            context=Context(),  # a root: the batch belongs to none of its events' traces
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self._group,
                "messaging.batch.message_count": len(pairs),
                "zhongtai.topics": topics,
            },
        )

    async def _apply(
        self,
        session: AsyncSession,
        batch: _Batch,
        record: ConsumerRecord[Any, Any],
        event: Decoded,
        *,
        traced: bool = True,
    ) -> ReceivedEvent | None:
        """Apply one record in the given transaction; None when it was a no-op or poison.

        The per-event hot path of every consumer: no metric call (outcomes are counted per
        batch), the processing span (``traced``) started directly from the stored traceparent.
        """
        if isinstance(event, PoisonEvent):
            # Never decodable, so retrying cannot help: dead-letter at once.
            await self._dead_letter(record, str(event), attempts=1)
            position = _position_id(record)
            if not await _seen(session, batch, position):
                batch.inbox.append(_inbox(record, position, "unknown", "dead", str(event)[:1000], batch.now))
                batch.seen[position] = True
                await self._tell_dead_lettered(session, record, event)
            return None
        if await _seen(session, batch, event.id):
            _tally(batch, "duplicate")
            return None
        if traced:
            if not await self._handle_traced(session, batch, record, event):
                return None
        elif await _is_stale(session, batch, event):
            self._stale(batch, record, event)
            return None
        elif self._handler is not None:
            await self._handler(session, event)
        return self._applied(batch, record, event)

    def _apply_loaded(
        self, batch: _Batch, record: ConsumerRecord[Any, Any], item: Decoded
    ) -> ReceivedEvent | object | None:
        """:meth:`_apply` of an event with no handler and no span of its own, decided from what
        ``_load`` loaded (its inbox entry, its aggregate's version): the same outcome, no
        coroutine. :data:`_NOT_LOADED` (nothing done) when it cannot be: then :meth:`_apply`."""
        if type(item) is not ReceivedEvent:
            return _NOT_LOADED  # (a poison record: dead-lettered the usual way)
        seen = batch.seen.get(item.id)
        if seen is None:
            return _NOT_LOADED
        if seen:
            _tally(batch, "duplicate")
            return None
        stale = _stale_if_loaded(batch, item)
        if stale is None:
            return _NOT_LOADED
        if stale:
            self._stale(batch, record, item)
            return None
        return self._applied(batch, record, item)

    @staticmethod
    def _applied(batch: _Batch, record: ConsumerRecord[Any, Any], event: ReceivedEvent) -> ReceivedEvent:
        if _records(batch, event.id):
            batch.inbox.append(_inbox(record, event.id, event.type, "applied", None, batch.now))
        batch.seen[event.id] = True
        _tally(batch, "applied")
        return event

    @staticmethod
    def _stale(batch: _Batch, record: ConsumerRecord[Any, Any], event: ReceivedEvent) -> None:
        if _records(batch, event.id):
            batch.inbox.append(_inbox(record, event.id, event.type, "stale", None, batch.now))
        batch.seen[event.id] = True
        _tally(batch, "stale")

    async def _handle_traced(
        self, session: AsyncSession, batch: _Batch, record: ConsumerRecord[Any, Any], event: ReceivedEvent
    ) -> bool:
        """The stale check and the handler in the event's own processing span, a child of its
        producer's; False if the event was stale. (When this process exports no spans, the span
        is an ids-only one, as the kit's server spans, ADR 0030: what leaves the process — the
        trace ids a handler's outbox rows carry — is the same, ~30 µs of an event's CPU less.)"""
        span = start_span(
            self._tracer,
            f"{record.topic} process",
            context_from_traceparent(event.traceparent),
            trace.SpanKind.CONSUMER,
            lambda: {
                "messaging.system": "kafka",
                "messaging.consumer.group.name": self._group,
                "messaging.destination.name": record.topic,
                "messaging.message.id": event.id,
                "messaging.kafka.offset": record.offset,
                "zhongtai.event_type": event.type,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if await _is_stale(session, batch, event):
                self._stale(batch, record, event)
                return False
            if self._handler is not None:
                await self._handler(session, event)
            return True
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _count(self, batch: _Batch) -> None:
        for outcome, n in batch.outcomes.items():
            _processed.add(n, {"group": self._group, "outcome": outcome})
        batch.outcomes.clear()

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: str, *, attempts: int) -> None:
        await self.dead_letters.send(record, error, attempts=attempts)

    async def _tell_dead_lettered(
        self, session: AsyncSession, record: ConsumerRecord[Any, Any], event: Decoded
    ) -> None:
        """The projection's ``dead_lettered`` step, in a savepoint of the transaction recording the
        record as dead; a failure other than the infrastructure's is logged, not raised."""
        if self._on_dead is None:
            return
        try:
            async with session.begin_nested():
                await self._on_dead(session, record, event if isinstance(event, ReceivedEvent) else None)
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise
            log.warning("projection's dead_lettered hook failed", group=self._group, topic=record.topic,
                        partition=record.partition, offset=record.offset, error=type(exc).__name__)  # fmt: skip
