"""The product's replica of its customers' eligibility facts (ADR 0054), and how fresh it is.

CheckEligibility (a read) answers from this replica instead of asking the customer service when
it can decide safely (:mod:`services.product.usecases`): the replica is caught up, the customer
is in it, and every age the birth year allows gives the same answer
(:func:`services.product.domain.evaluate_if_certain`). Everything else asks the customer service
as before; CreateSubscription (a write) always does.

- **What is stored** (``customer_eligibility``, product database): per customer exactly the
  eligibility facts every customer event's snapshot already carries — status, KYC, birth YEAR
  (``SENSITIVITY_INTERNAL``), risk tolerance and its expiry — and the customer aggregate's
  version. No new field on the bus, no PII beyond the birth year.
- **How it is fed:** the kit's :class:`services.kit.InboxConsumer` on the customer topic (group
  ``ZT_PRODUCT_REPLICA_GROUP_ID``) with :class:`EligibilityReplica` as its projection port:
  duplicates and stale versions are no-ops (the inbox and ``aggregate_versions``), a batch's
  newest snapshot per customer is upserted in the batch's transaction.
- **Freshness** (:class:`ReplicaFreshness`): every ``probe_interval_s`` the group's committed
  offsets and the topic's end offsets are read from the broker (the kit's
  :class:`services.kit.GroupProbe`, clients of its own). A consumer commits an offset only after
  the database transaction that applied the records before it, so once the committed offsets reach
  the end offsets a probe read at time t, the replica holds every customer event the broker held
  at t. ``caught_up()`` is true while that t is at most ``max_staleness_s`` old. A lagging or
  stopped consumer, an unreachable broker or a probe that does not answer lets t age out: the
  product then asks the customer service.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry import metrics, trace
from sqlalchemy import BigInteger, Boolean, Integer, String, Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from bank.customer.v1 import events_pb2 as customer_events
from services.kit import (
    TOPIC_CUSTOMER,
    GroupProbe,
    InboxConsumer,
    ProducerLifecycle,
    Reader,
    ReceivedEvent,
    bulk_upsert,
    cancel_and_wait,
    from_epoch_us,
    get_logger,
    group_reached,
    make_producer,
    timestamp_us,
)
from services.product.config import ProductSettings
from services.product.domain import ReplicatedFacts
from services.product.store import PRODUCT_COLUMNS, ProductBase, ProductRecord

log = get_logger("zhongtai.product.replica")
_answers = metrics.get_meter("zhongtai.product").create_counter(
    "product.eligibility.answers",
    unit="{answer}",
    description="CheckEligibility answers by source (replica | customer_service) and why the replica did not answer",
)
SOURCE_REPLICA = "replica"
SOURCE_CUSTOMER_SERVICE = "customer_service"
#: Answers this process gave, by (source, why): for tests and benchmarks (the counter is the metric).
ANSWERS: Counter[tuple[str, str]] = Counter()


def answered_by(source: str, why: str = "") -> None:
    """Say which source answered a CheckEligibility: on its span (``zhongtai.eligibility.source``
    and, for a fallback, ``zhongtai.eligibility.fallback``) and in ``product.eligibility.answers``."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("zhongtai.eligibility.source", source)
        if why:
            span.set_attribute("zhongtai.eligibility.fallback", why)
    _answers.add(1, {"source": source, "fallback": why} if why else {"source": source})
    ANSWERS[source, why] += 1


#: The customer events (each carries the customer's whole snapshot in ``customer``).
_CUSTOMER_EVENTS = (
    customer_events.CustomerCreated, customer_events.CustomerUpdated, customer_events.CustomerVerified,
    customer_events.CustomerRejected, customer_events.CustomerRiskAssessed, customer_events.CustomerClosed,
)  # fmt: skip


class CustomerEligibilityRow(ProductBase):
    """One customer's eligibility facts as of its aggregate ``version`` (migration 0003)."""

    __tablename__ = "customer_eligibility"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[int] = mapped_column(Integer)
    kyc_verified: Mapped[bool] = mapped_column(Boolean)
    birth_year: Mapped[int] = mapped_column(Integer)
    risk_tolerance: Mapped[int] = mapped_column(Integer)
    risk_expire_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # epoch µs; None: never
    version: Mapped[int] = mapped_column(BigInteger)


_REPLICA: Table = CustomerEligibilityRow.__table__  # type: ignore[assignment]
_FACT_COLUMNS = ("customer_id", "status", "kyc_verified", "birth_year", "risk_tolerance", "risk_expire_us")


def snapshot_row(event: ReceivedEvent) -> dict[str, Any] | None:
    """The replica's row for a customer event (None for anything else on the topic)."""
    message = event.message
    if not isinstance(message, _CUSTOMER_EVENTS):
        return None
    snap = message.customer
    return {
        "customer_id": snap.customer_id or event.aggregate_id,
        "status": int(snap.status),
        "kyc_verified": bool(snap.kyc_verified),
        "birth_year": int(snap.birth_year),
        "risk_tolerance": int(snap.risk_tolerance),
        "risk_expire_us": timestamp_us(snap.risk_tolerance_expire_time)
        if snap.HasField("risk_tolerance_expire_time")
        else None,
        "version": int(event.version or snap.version),
    }


def _replace_all(excluded: Any) -> dict[str, Any]:
    return {name: excluded[name] for name in (*_FACT_COLUMNS[1:], "version")}


class EligibilityReplica:
    """The customer consumer's projection port (:class:`services.kit.Projection`): a batch's
    newest snapshot per customer, upserted in the batch's transaction."""

    def fold(self, events: Sequence[ReceivedEvent]) -> list[dict[str, Any]]:
        newest: dict[str, dict[str, Any]] = {}
        for event in events:
            row = snapshot_row(event)
            if row is None:
                continue
            held = newest.get(row["customer_id"])
            if held is None or row["version"] > held["version"]:
                newest[row["customer_id"]] = row
        return list(newest.values())

    async def apply(self, session: AsyncSession, folded: list[dict[str, Any]]) -> None:
        # (stale versions never get here: the inbox's aggregate_versions dropped them)
        await bulk_upsert(session, _REPLICA, folded, key=["customer_id"], update_existing=_replace_all)

    def committed(self, applied: None) -> None:
        return None

    async def dead_lettered(
        self, session: AsyncSession, record: ConsumerRecord[Any, Any], event: ReceivedEvent | None
    ) -> None:
        """A customer event this replica could not apply (ADR 0065): forget the customer's row,
        unless it is already newer than that event, so that CheckEligibility asks the customer
        service (``not_replicated``) until the customer's next event brings a snapshot again.
        The row would otherwise keep answering from the facts before the lost change. A record
        that never decoded names its customer by its key (the relay's aggregate id)."""
        customer_id = event.aggregate_id if event is not None else (record.key or b"").decode(errors="replace")
        if not customer_id:
            return
        forget = delete(_REPLICA).where(_REPLICA.c.customer_id == customer_id)
        if event is not None and event.version:
            forget = forget.where(_REPLICA.c.version < event.version)
        await session.execute(forget)
        log.warning("customer event dead-lettered: replica row forgotten", customer_id=customer_id,
                    version=event.version if event is not None else None)  # fmt: skip


# ------------------------------------------------------------------------------------------
# reads
# ------------------------------------------------------------------------------------------

_PRODUCT_WITH_CUSTOMER = (
    select(*PRODUCT_COLUMNS, *(_REPLICA.c[name] for name in _FACT_COLUMNS))
    .select_from(PRODUCT_COLUMNS[0].table.outerjoin(_REPLICA, _REPLICA.c.customer_id == bindparam("customer_id")))
    .where(PRODUCT_COLUMNS[0].table.c.product_id == bindparam("product_id"))
)


async def read_product_and_customer(
    reader: Reader, product_id: str, customer_id: str
) -> tuple[ProductRecord | None, ReplicatedFacts | None]:
    """The product row and the customer's replicated facts, in ONE statement (an outer join:
    a customer not in the replica reads as None)."""
    row = await reader.first(_PRODUCT_WITH_CUSTOMER, {"product_id": product_id, "customer_id": customer_id})
    if row is None:
        return None, None
    split = len(PRODUCT_COLUMNS)
    product = ProductRecord(*row[:split])
    cid, status, kyc, birth_year, tolerance, expire_us = row[split:]
    if cid is None:
        return product, None
    expires = None if expire_us is None else from_epoch_us(int(expire_us))
    return product, ReplicatedFacts(cid, int(status), bool(kyc), int(birth_year), int(tolerance), expires)


# ------------------------------------------------------------------------------------------
# freshness
# ------------------------------------------------------------------------------------------

Offsets = Mapping[TopicPartition, int]


class CatchUp:
    """Pure: since when the replica is known to hold everything the broker held.

    Told each probe's time (taken BEFORE it was sent) and figures; ``as_of`` is the time of the
    newest probe whose end offsets the committed offsets (read at the same probe or a later one)
    have all reached."""

    #: Probes remembered while waiting to be reached (older ones are dropped: only newer claims
    #: are lost, never a wrong one made).
    MAX_PENDING = 64

    def __init__(self) -> None:
        self.as_of: float | None = None
        self._pending: deque[tuple[float, dict[TopicPartition, int]]] = deque(maxlen=self.MAX_PENDING)

    def observe(
        self, sent_at: float, committed: Mapping[TopicPartition, int | None], ends: Offsets, starts: Offsets
    ) -> None:
        self._pending.append((sent_at, dict(ends)))
        while self._pending and group_reached(committed, starts, self._pending[0][1]):
            self.as_of = self._pending.popleft()[0]


class ReplicaFreshness:
    """Whether the replica may answer: its consumer group caught up with the topic as of a probe
    at most ``max_staleness_s`` ago (the module's doc). ``start()``/``stop()`` run the probes.

    The probes run on demand: only while CheckEligibility asks (``caught_up()`` called within the
    last ``idle_after_s``). An idle product (or one serving writes only) sends the broker nothing
    for it; the first check after a quiet spell asks the customer service and wakes the probes,
    and the replica answers again from the first probe that finds the group caught up."""

    def __init__(
        self,
        probe: GroupProbe,
        *,
        max_staleness_s: float,
        probe_interval_s: float,
        idle_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.max_staleness_s = max_staleness_s
        self._interval = probe_interval_s
        self._idle_after = idle_after_s
        self._clock = clock
        self._catch_up = CatchUp()
        self._task: asyncio.Task[None] | None = None
        self._asked_at = float("-inf")  # (never asked)
        self._wanted = asyncio.Event()

    def caught_up(self) -> bool:
        now = self._clock()
        self._asked_at = now
        if not self._wanted.is_set():
            self._wanted.set()
        as_of = self._catch_up.as_of
        return as_of is not None and now - as_of <= self.max_staleness_s

    def staleness_s(self) -> float | None:
        """How old the replica's last known catch-up is (None: never caught up)."""
        as_of = self._catch_up.as_of
        return None if as_of is None else self._clock() - as_of

    async def probe_once(self) -> None:
        sent_at = self._clock()
        committed, ends, starts = await self._probe.read()
        self._catch_up.observe(sent_at, committed, ends, starts)

    async def _run(self) -> None:
        while True:
            if self._clock() - self._asked_at > self._idle_after:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker out of reach: the last catch-up ages out
                log.debug("replica freshness probe failed", error=type(exc).__name__)
                await self._probe.close()
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="product-replica-freshness")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._probe.close()


# ------------------------------------------------------------------------------------------
# wiring
# ------------------------------------------------------------------------------------------

#: The replica's fetches wait up to this long for customer events (Kafka's fetch.max.wait.ms):
#: an idle consumer then costs ~0.8 % of a core instead of ~2.9 % with the kit's 20 ms default
#: (measured side by side), and live events come several to a batch; well inside the 1.5 s bound.
REPLICA_LINGER_MS = 100


def eligibility_replica(settings: ProductSettings, engine: AsyncEngine) -> tuple[ReplicaFreshness, list[Any]]:
    """The replica's consumer (the kit's inbox consumer with :class:`EligibilityReplica` as its
    projection; its own dead-letter producer) and its freshness probe, as components that start
    after the server serves: the product serves (asking the customer service) while they join.
    Readiness does not follow this consumer: without it the product still answers, by the lookup."""
    s = settings
    producer = make_producer(s.kafka_bootstrap_servers, client_id=f"{s.kafka_client_id}-replica")
    consumer = InboxConsumer(
        engine=engine, bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.replica_group_id,
        topics=[s.kafka_topic_prefix + TOPIC_CUSTOMER], projection=EligibilityReplica(), dlq_producer=producer,
        client_id=f"{s.kafka_client_id}-replica", linger_ms=REPLICA_LINGER_MS,
    )  # fmt: skip
    probe = GroupProbe(
        s.kafka_bootstrap_servers, s.replica_group_id, [s.kafka_topic_prefix + TOPIC_CUSTOMER],
        timeout_s=s.product_replica_max_staleness_s,
    )  # fmt: skip
    freshness = ReplicaFreshness(
        probe, max_staleness_s=s.product_replica_max_staleness_s, probe_interval_s=s.product_replica_probe_interval_s
    )
    return freshness, [ProducerLifecycle(producer), consumer, freshness]
