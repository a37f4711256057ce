"""Runtime of the projection: the inbox consumer's projection and the view worker.

- :class:`HubProjection` is the data hub's :class:`~services.kit.consumer.Projection`, called
  by the kit's :class:`~services.kit.consumer.InboxConsumer` once per batch: ``fold`` reduces the
  batch's new events in memory (services/data_hub/fold.py, pure); ``apply`` writes them in the
  batch's transaction with a few bulk statements (services/data_hub/facts.py), rendering a small
  batch's views there too; ``committed`` wakes the view worker once that transaction committed.
- :class:`ViewWorker` re-renders dirty views (domain rules) and publishes changed ones to the
  compacted topic ``bank.customer-view.v1``, debounced: the customers table is its own outbox
  (``pending_publish``, latest state only), so several changes between two rounds go out once,
  and a crash before the publish leaves the flag set for the next round (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub import event_log, facts, schema, served, views
from services.data_hub.domain import Rules
from services.data_hub.fold import Patches
from services.data_hub.fold import fold as fold_batch
from services.kit import (
    EncodedPayload,
    Outgoing,
    Reader,
    ReceivedEvent,
    UnitOfWork,
    build_record,
    cancel_and_wait,
    get_logger,
    send_all,
    source_of,
)

log = get_logger("zhongtai.data_hub")
_meter = metrics.get_meter("zhongtai.data_hub")
_views_published = _meter.create_counter("datahub.views.published", unit="{view}", description="views published")
_views_rendered = _meter.create_counter("datahub.views.rendered", unit="{view}", description="views re-rendered")
_publish_backlog: dict[str, int] = {"views": 0}
_meter.create_observable_gauge(
    "datahub.views.publish_backlog",
    callbacks=[lambda _: [metrics.Observation(v) for v in _publish_backlog.values()]],
    unit="{view}",
    description="changed views not yet published",
)

SOURCE = source_of("data_hub")
_VIEW = datahub_pb2.CustomerView.DESCRIPTOR

#: Told once a batch committed: (does the worker have views to render, or only to publish?,
#: the table set written, the views rendered in the batch's transaction).
OnCommit = Callable[[bool, schema.Tables, Sequence[views.View]], None]


@dataclass(frozen=True)
class Applied:
    """What a batch's transaction did, for the view worker once it committed."""

    render: bool  # views left dirty for the worker (else it only publishes)
    tables: schema.Tables
    ready: list[views.View] = field(default_factory=list)  # rendered here, for the publisher


class HubProjection:
    """The data hub's projection port (one instance per process).

    ``rules`` + ``inline_render_max``: a batch touching at most that many customers (live
    traffic) has their views rendered in the batch's own transaction, so they are served the
    moment it commits and the view worker only publishes them; bigger batches (a backlog, a
    replay) leave the views dirty for the worker, which coalesces many batches into one render.
    """

    def __init__(
        self,
        on_commit: OnCommit | None = None,
        *,
        rules: Rules | None = None,
        inline_render_max: int = 0,
        feed_topics: frozenset[str] = frozenset(),
    ) -> None:
        self._on_commit = on_commit
        self._rules = rules
        self._inline_max = inline_render_max if rules is not None else 0
        self._tables = schema.SETS[schema.SET_NAMES[0]]  # the set the last batch wrote (a guess at first)
        # The customer event feed (ADR 0062): the events of these topics (as named on the broker)
        # are listed in ``dh_customer_events`` in their batch's transaction; none when empty.
        self._feed_topics = feed_topics

    def fold(self, events: Sequence[ReceivedEvent]) -> Patches:
        patches = fold_batch(events)
        if self._feed_topics:
            patches.feed = event_log.feed_rows(events, self._feed_topics)
        return patches

    async def dead_lettered(
        self, session: AsyncSession, record: ConsumerRecord[Any, Any], event: ReceivedEvent | None
    ) -> None:
        """A record the consumer dead-letters (in the transaction recording it dead) is still
        listed in the feed, as every event received (ADR 0040, 0062): from its headers, so an
        undecodable record naming a customer and an event id is listed too."""
        if record.topic in self._feed_topics and (row := event_log.row_of(record)) is not None:
            await event_log.insert_feed(session, [row])

    async def apply(self, session: AsyncSession, patches: Patches) -> Applied | None:
        if not patches:
            await event_log.insert_feed(session, patches.feed)  # (events the hub does not project)
            return None
        # Into the active set, read under a share lock: a rebuild's flip (FOR UPDATE) waits for
        # us, and we wait for it, so no batch lands in the set that is being retired.
        tables, catalogue_changed = await facts.apply_live(session, self._tables, patches)
        self._tables = tables
        touched = patches.customers.keys()
        if self._rules is None or not 0 < len(touched) <= self._inline_max:
            return Applied(True, tables)
        # (the touched rows are already locked by this transaction: no other render can
        # interleave, and the worker's write-back of an older render is dropped)
        ready: list[views.View] = []
        rendered, _ = await views.materialize(
            session, tables, self._rules, limit=len(touched), ids=sorted(touched), written=ready, defer_write_back=True
        )
        if rendered:
            _views_rendered.add(rendered)
        # (a new catalogue dirties every view)
        return Applied(catalogue_changed or rendered < len(touched), tables, ready)

    def committed(self, applied: Applied) -> None:
        # Called on the database commit itself, not after the consumer's offset commit to Kafka
        # that follows it (one broker round trip sooner). The views rendered in the batch go to
        # the publisher as they are (no read-back).
        if self._on_commit is not None:
            self._on_commit(applied.render, applied.tables, applied.ready)


class ViewWorker:
    """Renders dirty views and publishes changed ones; ``start()``/``stop()``, ``wake()``."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer | None,
        rules: Rules,
        *,
        batch_size: int = 500,
        debounce_s: float = 0.01,
        poll_interval_s: float = 1.0,
        max_pause_s: float = 0.0,
        owns_producer: bool = False,
        topic_prefix: str = "",
        backlog: Callable[[], bool] | None = None,
        backlog_pause_s: float = 0.0,
    ) -> None:
        self._engine = engine
        self._topic_prefix = topic_prefix  # ZT_KAFKA_TOPIC_PREFIX: the view topic's namespace
        self._producer = producer
        self._rules = rules
        self._batch_size = batch_size
        self._debounce = debounce_s
        self._poll = poll_interval_s
        self._max_pause = max_pause_s
        self._owns_producer = owns_producer
        # Catching up (a backlog, a replay): views are stale anyway until the consumer is
        # through, so render at most every ``backlog_pause_s`` and leave the CPU to the consumer
        # (each render coalesces every change since the last one).
        self._backlog = backlog
        self._backlog_pause = backlog_pause_s
        self._wake = asyncio.Event()
        self._render_next = True
        self._ready: list[tuple[schema.Tables, list[views.View]]] = []
        self._task: asyncio.Task[None] | None = None
        # Clearing the published flags is one UPDATE: on PostgreSQL it runs on its own
        # (autocommit) instead of between a BEGIN and a COMMIT, two round trips less per round,
        # and on the pool's asyncpg connection the way the kit's Reader sends a statement (ADR
        # 0048: through an autocommit session it was ~0.6 ms of a one-view round, most of it
        # SQLAlchemy's; with statement spans on, the Reader sends it through an autocommit
        # session as before). (SQLite keeps the unit of work: its transactions are the kit's
        # BEGIN IMMEDIATE.)
        self._single_statement = Reader(engine) if engine.dialect.name == "postgresql" else None
        self.rendered_total = 0
        self.published_total = 0

    def wake(
        self,
        render: bool = True,
        tables: schema.Tables | None = None,
        ready: Sequence[views.View] = (),
    ) -> None:
        """Run a round soon; ``render=False``: only views are waiting to be published (the
        consumer rendered them inline), so the round skips looking for dirty ones. ``ready``:
        views committed just now (customer_id, doc, version, update_us) in ``tables``, published
        without being read back."""
        self._render_next = self._render_next or render
        if ready and tables is not None:
            self._ready.append((tables, list(ready)))
        self._wake.set()

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._producer is not None and self._owns_producer:
            await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="data-hub-view-worker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._producer is not None and self._owns_producer:
            self._owns_producer = False
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _run(self) -> None:
        backoff = self._poll
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            render, self._render_next = self._render_next, False
            try:
                await self.run_once(render=render)
                backoff = self._poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("view worker round failed; will retry", error=type(exc).__name__, detail=str(exc)[:200])
                backoff = min(backoff * 2, 10.0)
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except TimeoutError:
                self._render_next = True  # the periodic pass looks for dirty views too
            self._wake.clear()
            # Debounce: let concurrent commits pile up into one round. Under load a round takes
            # longer, and we then wait as long as it took: rendering gets at most about half of
            # the process, the consumer the rest, and each round covers more changes at once.
            pause = max(self._debounce, min(loop.time() - started, self._max_pause))
            if self._backlog is not None and self._backlog():
                pause = max(pause, self._backlog_pause)
            if pause:
                await asyncio.sleep(pause)

    async def run_once(self, *, render: bool = True) -> tuple[int, int]:
        """Render every dirty view, then publish every pending one; returns (changed, published)."""
        started = time.perf_counter()
        changed = rendered_here = 0
        while render:
            async with UnitOfWork(self._engine) as uow:
                tables = await schema.active_tables(uow.session)
                rendered, ch = await views.materialize(uow.session, tables, self._rules, limit=self._batch_size)
                await uow.commit()
            changed += ch
            self.rendered_total += rendered
            rendered_here += rendered
            if rendered:
                _views_rendered.add(rendered)
            if rendered < self._batch_size:
                break
        published = 0
        render_done = time.perf_counter()
        handed, self._ready = self._ready, []
        scan = render or not handed
        if self._producer is not None and not scan:
            for tables, rows in handed:
                published += await self._publish(tables, rows)
        if self._producer is not None and scan:
            # The scan reads every committed view, the handed ones included: drop those handed
            # so far (published after the scan they could go out older than what it sent);
            # views handed from here on were committed after it began, so they are not older.
            self._ready.clear()
            while True:
                n = await self.publish_once()
                published += n
                if n < self._batch_size:
                    break
        if rendered_here or published:
            log.debug("views rendered and published", rendered=rendered_here, changed=changed, published=published,
                      render_ms=round((render_done - started) * 1000, 2),
                      publish_ms=round((time.perf_counter() - render_done) * 1000, 2))  # fmt: skip
        return changed, published

    async def publish_once(self) -> int:
        assert self._producer is not None
        async with UnitOfWork(self._engine) as uow:
            tables = await schema.active_tables(uow.session)
            rows = await served.pending_views(uow.session, tables, self._batch_size)
        _publish_backlog["views"] = len(rows)
        return await self._publish(tables, rows)

    async def _publish(self, tables: schema.Tables, rows: list[views.View]) -> int:
        """Send these views to the view topic, wait for every ack, then clear their flags."""
        assert self._producer is not None
        if not rows:
            return 0
        records: list[Outgoing] = []
        for customer_id, doc, version, update_us in rows:
            # (the document as stored, its version and update time appended: not parsed again)
            record = build_record(
                EncodedPayload(_VIEW, customer_id, served.served_encoding(doc, version, update_us)),
                source=SOURCE, aggregate_type="customer_view", aggregate_id=customer_id, version=version,
            )  # fmt: skip
            records.append((self._topic_prefix + record.topic, record.key, record.value, record.headers))
        await send_all(self._producer, records)  # every ack, or raise and keep the rows pending
        published = [(cid, v) for cid, _, v, _ in rows]
        if self._single_statement is not None:
            update = served.mark_published_statement(tables, published)
            if update is not None:
                await self._single_statement.all(*update)
        else:
            async with UnitOfWork(self._engine) as uow:
                await served.mark_published(uow.session, tables, published)
                await uow.commit()
        _views_published.add(len(rows))
        self.published_total += len(rows)
        return len(rows)
