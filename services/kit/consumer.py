"""Idempotent Kafka consumers: inbox, bounded retries, dead letters, offsets after commits.

For each poll (up to ``max_records`` over its partitions), :class:`InboxConsumer` applies every
new event in ONE database transaction (a handler per event, or a :class:`Projection` per batch,
+ inbox rows + aggregate versions, written in bulk), commits it, and only then commits each
partition's offset+1 to Kafka. Duplicates (an event id already in the inbox) and stale
versions (not newer than the aggregate's last applied version) are no-ops. If the batch fails,
it is applied in halves, a failing half halved again, down to a few records that are retried one
by one; an event that still fails after ``max_attempts`` goes to the dead-letter
topic ``<group>.dlq`` with the error and its original headers, is recorded in the inbox as
dead, and the partition keeps flowing.

Faults (:func:`services.kit.faults.is_infrastructure_error`): a batch that fails because the
database or the broker is unreachable, starting up or refusing says nothing about its events, so
it is neither split nor dead-lettered: it is applied again, whole, with capped exponential
back-off, for as long as the failure lasts. Only an event's own error counts towards
``max_attempts``. The consumer's task is supervised: if it dies it is restarted (a new Kafka
consumer, from the committed offsets) with back-off. ``consuming`` is False (and ``on_state`` is
told, e.g. to set the gRPC health NOT_SERVING) while a failure is waited out or the task restarts.

Tracing: a batch of at most ``trace_each_max`` records (live traffic) gets a processing span per
event, the child of its producer's span; a bigger one (a catch-up, a replay) gets one span for
the batch, linked to its events' producer spans (docs/adr/0005-batch-spans-for-catch-up.md).

Overlapped writes (``overlap_writes``, ADR 0006): batch N+1 is staged (lookups and handlers or
the projection's ``fold``, in its own open transaction) while batch N is written and committed
by a task. It is exactly what the plain loop does, in another order:

- N+1 counts N's event ids as in the inbox and N's aggregate versions as stored (``_carry``): N
  commits before N+1 is written, so that is what N+1 would have read;
- N+1's writes (the projection's ``apply``, inbox rows, commit) start only after N's commit, so
  they see N's rows (READ COMMITTED: each statement reads what is committed);
- offsets are committed after each batch's DB commit, in order;
- if N's write fails, N+1 (which counted on it) is rolled back, and both go through ``_process``
  — the plain path with its whole-batch retries and its split. So does a batch whose
  staging failed, after the write before it has landed.

Only polls of at least ``overlap_min_records`` (a backlog) are staged this way; smaller ones
(live traffic) wait for the write in flight and are applied the plain way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from opentelemetry import metrics
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.applier import BatchApplier, Handler, Projection, _pairs, _Staged
from services.kit.dlq import DeadLetters
from services.kit.events import ReceivedEvent
from services.kit.faults import is_infrastructure_error
from services.kit.inbox import AggregateVersion, Decoded, InboxRow, _decode, _Polled
from services.kit.kafka import SESSION_TIMEOUT_MS, commit_unless_rebalancing, ensure_topics, make_consumer, membership
from services.kit.lifecycle import cancel_and_wait
from services.kit.logging import get_logger
from services.kit.progress import GroupStalled, run_group_watched

# (the inbox tables live in inbox.py, the database side in applier.py; re-exported for their users)
__all__ = ["AggregateVersion", "Handler", "InboxConsumer", "InboxRow", "Projection"]

log = get_logger("zhongtai.consumer")
_meter = metrics.get_meter("zhongtai.consumer")
_batch_seconds = _meter.create_histogram(
    "consumer.batch.duration", unit="s", description="one poll's records: database transaction and offset commit"
)
_restarts = _meter.create_counter(
    "consumer.restarts", unit="{restart}", description="consumer tasks that died and were restarted by their supervisor"
)
_stalls = _meter.create_counter(
    "consumer.infrastructure_retries",
    unit="{retry}",
    description="batches held back by a database or broker failure, retried until it passes",
)
_lag_by_partition: dict[tuple[str, str, int], int] = {}
_consuming_by_group: dict[str, int] = {}
_meter.create_observable_gauge(
    "consumer.consuming",
    callbacks=[lambda _: [metrics.Observation(v, {"group": g}) for g, v in _consuming_by_group.items()]],
    unit="1",
    description="1 while the group's consumer applies events, 0 while it waits out a failure or restarts",
)
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

#: A batch that collides with another member's is applied again whole this many times (after
#: 50, 100, 150 ms) before it is split (``_apply_split``).
_COLLISION_RETRIES = 3
_COLLISION_PAUSE_S = 0.05
#: A failed batch is halved down to this many records, which are then applied one at a time.
_ONE_BY_ONE = 8
#: A consumer task that ran this long before it died restarts with the shortest back-off again.
_STABLE_RUN_S = 30.0


def _size(polled: _Polled) -> int:
    return sum(len(part) for part in polled.values())


def _still_assigned(consumer: AIOKafkaConsumer, batches: _Polled) -> _Polled:
    """The batch without the partitions this member no longer owns (a rebalance moved them)."""
    assigned = consumer.assignment()
    if all(tp in assigned for tp in batches):
        return batches
    dropped = sum(len(part) for tp, part in batches.items() if tp not in assigned)
    log.info("records of partitions moved to another member left to it", records=dropped)
    return {tp: part for tp, part in batches.items() if tp in assigned}


class InboxConsumer:
    """One consumer group applying events through the inbox; ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler | None = None,
        projection: Projection[Any, Any] | None = None,
        dlq_producer: AIOKafkaProducer,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        max_records: int = 500,
        client_id: str | None = None,
        after_commit: Callable[[list[ReceivedEvent]], Awaitable[None]] | None = None,
        trace_each_max: int = 100,
        overlap_writes: bool = False,
        overlap_min_records: int = 100,
        on_state: Callable[[bool, str], Awaitable[None]] | None = None,
        group_instance_id: str | None = None,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        max_fault_backoff_s: float = 2.0,
        linger_ms: int = 0,
        stall_after_s: float = 30.0,
        record_versioned: bool = True,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group_id
        self._topics = list(topics)
        self._applier = BatchApplier(
            engine=engine, group_id=group_id, handler=handler, projection=projection,
            dead_letters=DeadLetters(dlq_producer, group_id), max_attempts=max_attempts,
            retry_backoff_s=retry_backoff_s, trace_each_max=trace_each_max, record_versioned=record_versioned,
        )  # fmt: skip
        self.dlq_topic = self._applier.dead_letters.topic
        self._max_records = max_records
        self._client_id = client_id or group_id
        self._after_commit = after_commit
        # Apply the next poll in memory (its lookups and handlers, in its own transaction) while
        # the previous batch is written and committed: the process's CPU and the database's work
        # overlap instead of taking turns. Only for a projection (its ``apply`` runs after the
        # previous commit) or handlers that read nothing that batch writes: ``_run_overlapped``.
        # (a poll of fewer records, live traffic, is applied the plain way: it gains nothing)
        self._overlap = overlap_writes
        self._overlap_min = overlap_min_records
        # Told (consuming, reason) whenever ``consuming`` changes: readiness follows it.
        self._on_state = on_state
        # Static membership (KIP-345): a member restarted with the same id gets its partitions
        # back at once instead of after the dead member's session timeout.
        self._instance_id = group_instance_id or None
        self._session_timeout_ms = session_timeout_ms
        self._max_fault_backoff = max_fault_backoff_s
        # Coalescing (``make_consumer``): the broker answers a fetch after this long or once a
        # backlog's worth is there, so live events come several to a batch and share its fixed
        # cost (the transaction, the lookups, the views' render and publish, the offset commit).
        self._linger_ms = linger_ms
        # A group that leaves records uncommitted without moving this long is restarted, loudly
        # (services/kit/progress.py, ADR 0046); 0 = not watched.
        self._stall_after_s = stall_after_s
        self._init_state()

    def _init_state(self) -> None:
        """What changes while it runs: its Kafka consumer and task, and the public state and
        counters (read by readiness, benchmarks and tests)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._offset_commit: asyncio.Future[None] | None = None
        #: False while a database or broker failure is waited out, or the task is restarting.
        self.consuming = True
        self.state_reason = "starting"
        self.restarts = 0  # the consumer's task died and its supervisor started it again
        self.stalls = 0  # of which: the group stood still with records waiting (progress.py)
        #: True while a batch waits out a database or broker failure (already reported as such).
        self.waiting_out_fault = False
        self.fault_retries = 0  # a batch held back by an infrastructure failure, applied again
        self.applied_total = 0
        self.batches_retried = 0  # a batch that collided with another member's, applied again whole
        self.batches_split = 0  # a batch that failed, applied in halves down to single records
        self.writes_failed = 0  # an overlapped write that failed: applied again the slow way
        self.commits_skipped = 0  # a batch's offsets not sent: the group was rebalancing
        #: Records behind the high watermarks of this member's partitions, after the last poll.
        self.lag = 0

    @property
    def dead_total(self) -> int:
        """Events this process sent to the dead-letter topic."""
        return self._applier.dead_letters.total

    async def start(self) -> None:
        """Start consuming in the background and return at once: joining the group (which waits
        for a rebalance, up to a dead member's session timeout) must not hold back the process's
        other components, e.g. a data hub serving views that are already in its database."""
        if self._task is not None:
            return
        _consuming_by_group[self._group] = 1
        self._task = asyncio.create_task(self._supervise(), name=f"consumer-{self._group}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close()
        _consuming_by_group.pop(self._group, None)

    async def _open(self) -> AIOKafkaConsumer:
        await ensure_topics(self._bootstrap, {self.dlq_topic: {}})
        consumer = make_consumer(
            self._bootstrap, *self._topics, group_id=self._group, client_id=self._client_id,
            max_poll_records=self._max_records, group_instance_id=self._instance_id,
            session_timeout_ms=self._session_timeout_ms, linger_ms=self._linger_ms,
        )  # fmt: skip
        self._consumer = consumer
        await consumer.start()  # joins the group: returns once partitions are assigned
        return consumer

    async def _close(self, timeout_s: float | None = None) -> None:
        """The last batch's offsets, then the Kafka consumer leaves (safe to call twice); after
        a failure, each step gets ``timeout_s`` (a wedged client must not hold the restart)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._offsets_committed(), timeout_s)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout_s)

    async def _open_and_run(self) -> None:
        consumer = await self._open()
        await self._state(True, "consuming")
        await self._run(consumer)

    async def _run_watched(self) -> None:
        """Join and run, with the group's progress watched beside it (a stall raises
        GroupStalled): a join that never completes is a stall too."""
        await run_group_watched(
            self._open_and_run(), bootstrap=self._bootstrap, group=self._group, topics=self._topics,
            stall_after_s=self._stall_after_s, waiting=lambda: self.waiting_out_fault,
        )  # fmt: skip

    async def _supervise(self) -> None:
        """Run the consumer; if its loop dies, say so, close it and start a new one (from the
        committed offsets) with capped exponential back-off, until stopped."""
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self._run_watched()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The back-off grows while the loop keeps dying soon after each start, and starts
                # over once it has run for a while (a rejoin alone proves nothing).
                failures = 1 if time.monotonic() - started > _STABLE_RUN_S else failures + 1
                self.restarts += 1
                _restarts.add(1, {"group": self._group})
                self.waiting_out_fault = False
                stalled = isinstance(exc, GroupStalled)
                self.stalls += stalled
                if stalled and self._instance_id is not None:
                    # A static member that stalled rejoins as a dynamic one: the old member may
                    # still hold its id (ADR 0046), and two live members with one id fence each other.
                    log.warning("stalled static member rejoins as a dynamic member", group=self._group,
                                group_instance_id=self._instance_id)  # fmt: skip
                    self._instance_id = None
                await self._state(False, f"{'group stalled' if stalled else 'consumer stopped'}: {type(exc).__name__}")
                # (a stall names what this member's client held: a pending rejoin, no partitions …)
                log.error("consumer group stalled; restarting its consumer" if stalled else
                          "consumer task died; restarting it", group=self._group, error=type(exc).__name__,
                          detail=str(exc)[:300], restarts=self.restarts,
                          **(membership(self._consumer) if stalled else {}))  # fmt: skip
                await self._close(timeout_s=10.0)
                await asyncio.sleep(self._fault_pause(failures))

    def _fault_pause(self, failures: int) -> float:
        """Capped exponential back-off with jitter: 0.1, 0.2, 0.4 … ``max_fault_backoff_s``."""
        return min(self._max_fault_backoff, 0.1 * 2 ** min(failures - 1, 10)) * (0.75 + random.random() / 2)

    async def _state(self, consuming: bool, reason: str) -> None:
        if consuming == self.consuming and reason == self.state_reason:
            return
        self.consuming, self.state_reason = consuming, reason
        _consuming_by_group[self._group] = int(consuming)
        if consuming:
            log.info("consumer is consuming", group=self._group)
        else:
            log.warning("consumer is not consuming", group=self._group, reason=reason)
        if self._on_state is not None:
            try:
                await self._on_state(consuming, reason)
            except Exception as exc:  # readiness reporting must never stop consumption
                log.warning("consumer state hook failed", error=type(exc).__name__)

    async def _poll(
        self, consumer: AIOKafkaConsumer, *, timeout_ms: int = 200, max_records: int | None = None
    ) -> _Polled:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records or self._max_records)
        return {tp: [(r, _decode(r)) for r in records] for tp, records in batches.items() if records}

    async def _top_up(self, consumer: AIOKafkaConsumer, batches: _Polled) -> _Polled:
        """Add what arrived while the prefetched poll waited for the previous batch: without
        it, live events would wait for one more whole batch (the prefetch ran at its start)."""
        room = self._max_records - _size(batches)
        if room <= 0:
            return batches
        more = await self._poll(consumer, timeout_ms=0, max_records=room)
        return {**batches, **{tp: [*batches.get(tp, ()), *part] for tp, part in more.items()}}

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        # Pipelined: the next poll (fetch + envelope decode, no database) runs while this batch
        # waits for PostgreSQL; offsets are still committed only after each batch's DB commit.
        # (Records of a partition revoked meanwhile may then be applied by two members: the
        # inbox makes the second a no-op, as for any redelivery.)
        if self._overlap:
            await self._run_overlapped(consumer)
            return
        next_poll = asyncio.create_task(self._poll(consumer))
        try:
            while True:
                batches = await self._top_up(consumer, await next_poll)
                next_poll = asyncio.create_task(self._poll(consumer))
                if batches:
                    await self._process(consumer, batches)
                await self._update_lag(consumer)
        finally:
            next_poll.cancel()

    async def _run_overlapped(self, consumer: AIOKafkaConsumer) -> None:
        """The loop with batch N+1 staged while batch N is written and committed by a task: the
        rules that keep it equivalent to the plain loop are in the module's doc."""
        next_poll = asyncio.create_task(self._poll(consumer))
        written: _Staged | None = None  # the batch being written (by its ``writing`` task)
        staged: _Staged | None = None
        try:
            while True:
                polled = await next_poll
                if written is not None and _size(polled) < self._overlap_min:
                    # Live traffic: a small batch staged behind the write in flight would only wait
                    # for it, and live traffic would come in more, smaller batches, each paying a
                    # write's fixed cost (measured: p50 event-to-view +30 ms). So the write lands
                    # first, and the batch (topped up with what arrived meanwhile) goes the plain way.
                    if not await self._landed(written):
                        await self._process(consumer, written.batches)
                    written = None
                polled = await self._top_up(consumer, polled)
                next_poll = asyncio.create_task(self._poll(consumer))
                polled = _still_assigned(consumer, polled) if polled else polled
                if written is None and 0 < _size(polled) < self._overlap_min:
                    await self._process(consumer, polled)
                    await self._update_lag(consumer)
                    continue
                slow: list[_Polled] = []  # what goes the plain way once the write in flight landed
                staged = await self._try_stage(polled, written, slow)
                if written is not None and not await self._landed(written):
                    slow.insert(0, written.batches)  # the failed write goes the plain way first,
                    if staged is not None:  # and the batch that counted on it after it
                        await staged.discard()
                        staged, slow = None, [*slow, polled]
                written = None
                for batches in slow:
                    await self._process(consumer, batches)
                if staged is not None:
                    written, staged = staged, None
                    written.writing = asyncio.create_task(self._write(consumer, written))
                await self._update_lag(consumer)
        finally:
            next_poll.cancel()
            if staged is not None:
                await staged.discard()
            if written is not None and written.writing is not None:
                # Stopping: the batch being written lands (and its offsets go with it), or rolls
                # back and is read again by whoever owns the partition next.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await written.writing

    async def _try_stage(self, polled: _Polled, written: _Staged | None, slow: list[_Polled]) -> _Staged | None:
        """Stage a poll behind the batch being written; one that fails to stage goes to ``slow``."""
        if not polled:
            return None
        try:
            return await self._applier.stage(_pairs(polled), batches=polled, after=written)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("batch failed to stage; applying it the plain way", error=type(exc).__name__)
            slow.append(polled)
            return None

    async def _landed(self, written: _Staged) -> bool:
        """Wait for a batch's overlapped write (not cancelled with us: shielded); False if it failed."""
        assert written.writing is not None
        try:
            await asyncio.shield(written.writing)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.writes_failed += 1
            log.warning("batch write failed; applying it again the plain way", error=type(exc).__name__)
            return False

    async def _write(self, consumer: AIOKafkaConsumer, staged: _Staged) -> None:
        """Write and commit a staged batch, then hand its offsets to the broker."""
        staged.marks.append(time.perf_counter())  # (queued behind the previous write until now)
        await self._applier.commit(staged)
        await self._finish(consumer, staged.batches, staged.pairs, staged.applied, staged.marks)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                position = await consumer.position(tp)
                behind = max(0, high - position)
                _lag_by_partition[(self._group, tp.topic, tp.partition)] = behind
                lag += behind
        self.lag = lag

    async def _process(self, consumer: AIOKafkaConsumer, batches: _Polled) -> None:
        """Apply one poll's records, waiting out database and broker failures: the batch is
        applied again, whole, with back-off, for as long as the failure lasts (never split, never
        dead-lettered for it); records of partitions moved to another member meanwhile are left
        to it."""
        failures = 0
        while True:
            try:
                await self._apply_batch(consumer, batches)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_infrastructure_error(exc):
                    raise
                failures += 1
                self.fault_retries += 1
                self.waiting_out_fault = True
                _stalls.add(1, {"group": self._group})
                await self._state(False, f"waiting for the database or broker: {type(exc).__name__}")
                pause = self._fault_pause(failures)
                log.warning("batch held back by an infrastructure failure; retrying", group=self._group,
                            error=type(exc).__name__, detail=str(exc)[:200], attempt=failures,
                            retry_in_s=round(pause, 2))  # fmt: skip
                await asyncio.sleep(pause)
                batches = _still_assigned(consumer, batches)
                continue
            if failures:
                self.waiting_out_fault = False
                await self._state(True, "consuming")
            return

    async def _apply_batch(self, consumer: AIOKafkaConsumer, batches: _Polled) -> None:
        """Apply one poll's records (all partitions) in one transaction, then commit the offsets."""
        clock = time.perf_counter
        marks = [clock()]
        try:
            collisions = 0
            while True:
                # Records of partitions handed to another member since they were polled are left
                # to it (it reads them from the last committed offset): applying them here too
                # would only collide with its transaction.
                batches = _still_assigned(consumer, batches)
                pairs = _pairs(batches)
                if not pairs:
                    return
                try:
                    applied = await self._applier.transaction(pairs, marks)
                    break
                except IntegrityError:
                    # Another member applied some of these records meanwhile (a rebalance hands
                    # partitions over while a batch is in flight): the inbox has them now, so the
                    # batch is applied again, whole, and they are skipped as duplicates — instead
                    # of splitting it (a transaction per half, down to one per record). The
                    # other member may still be committing a later batch of the same records, so
                    # this is tried a few times, after a short pause, on the partitions still ours.
                    collisions += 1
                    if collisions > _COLLISION_RETRIES:
                        raise
                    log.info("batch collided with another member's; applying it again", records=len(pairs))
                    self.batches_retried += 1
                    await asyncio.sleep(_COLLISION_PAUSE_S * collisions)
                    del marks[1:]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise  # not the events' fault: the whole batch is retried (``_process``)
            log.warning("batch failed; applying it in halves", records=len(pairs), error=type(exc).__name__)
            self.batches_split += 1
            applied = await self._apply_split(pairs)
        await self._finish(consumer, batches, pairs, applied, marks)

    async def _apply_split(self, pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]]) -> list[ReceivedEvent]:
        """A failed batch's records in order: each half in its own transaction, a failing half
        halved again, down to :data:`_ONE_BY_ONE` records, which go one at a time (retries, then
        the dead-letter topic). One bad record among n costs ~2·log2(n) transactions, not n (at
        ~20 ms each, a 10,000-record catch-up batch would stall ~200 s one by one). An
        infrastructure failure is raised (the whole batch is applied again: what committed here
        is then a no-op)."""
        if len(pairs) <= _ONE_BY_ONE:
            applied = []
            for record, _ in pairs:
                event = await self._applier.process_one(record)
                if event is not None:
                    applied.append(event)
            return applied
        middle = len(pairs) // 2
        applied = []
        for half in (pairs[:middle], pairs[middle:]):
            try:
                applied += await self._applier.transaction(half, [])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                applied += await self._apply_split(half)
        return applied

    async def _finish(
        self,
        consumer: AIOKafkaConsumer,
        batches: _Polled,
        pairs: list[tuple[ConsumerRecord[Any, Any], Decoded]],
        applied: list[ReceivedEvent],
        marks: list[float],
    ) -> None:
        """After a batch's DB commit (and the projection's ``committed``): its offsets to the
        broker, its metrics and log line, and the ``after_commit`` hook."""
        clock = time.perf_counter
        marks.append(clock())
        # The offsets go to the broker while the next batch is applied (the previous commit is
        # awaited first, so commits stay in order): never before this batch's DB commit.
        await self._offsets_committed()
        marks.append(clock())
        offsets = {tp: partition[-1][0].offset + 1 for tp, partition in batches.items()}
        self._offset_commit = asyncio.ensure_future(self._commit(consumer, offsets))
        _batch_seconds.record(marks[-1] - marks[0], {"group": self._group})
        if len(marks) in (6, 7) and log.is_enabled_for(logging.DEBUG):  # (the oldest event: a pass over all)
            ms = [round((b - a) * 1000, 2) for a, b in itertools.pairwise(marks)]
            queued = ms.pop(2) if len(ms) == 6 else None  # overlapped: waiting for the previous write
            times = [e.time for _, e in pairs if isinstance(e, ReceivedEvent)]
            age_ms = round((datetime.now(UTC) - min(times)).total_seconds() * 1000, 1) if times else None
            log.debug("batch applied", records=len(pairs), load_ms=ms[0], apply_ms=ms[1], queued_ms=queued,
                      projection_write_ms=ms[2], write_commit_ms=ms[3], previous_offsets_wait_ms=ms[4],
                      oldest_event_age_ms=age_ms)  # fmt: skip
        self.applied_total += len(applied)
        if applied and self._after_commit is not None:
            await self._after_commit(applied)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[Any, int]) -> None:
        """Commit a batch's offsets, unless the group is rebalancing (``kafka.rebalancing``: a
        commit then fails, or costs the member its id): the partitions' next owner, maybe this
        member, reads those records again from the last commit, and the inbox makes them no-ops.
        The same if the commit has not gone through within a session (then raises TimeoutError)."""
        if not await commit_unless_rebalancing(consumer, offsets, give_up_after_s=self._session_timeout_ms / 1000):
            self.commits_skipped += 1
            log.info("offsets not committed: the group is rebalancing; records will be re-delivered", group=self._group)

    async def _offsets_committed(self) -> None:
        """Wait for the last offset commit. A failed one (the group rebalanced meanwhile) is
        logged and dropped: the new owner of those partitions re-reads the records, and the inbox
        makes the re-delivery a no-op."""
        pending, self._offset_commit = self._offset_commit, None
        if pending is None:
            return
        try:
            await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("offset commit failed; records will be re-delivered", error=type(exc).__name__)
