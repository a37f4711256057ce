"""``zhongtai reconcile``: does the ledger add up, did every event reach Kafka, do the views agree?

An operator's check (ARCHITECTURE §8, invariant 7), read-only, in three parts:

1. **Ledger** (product database): every subscription's balance equals its opening amount plus
   its credits minus its debits; every posting belongs to a subscription.
2. **Outbox → topics** (product and customer databases, Kafka): no committed event is still
   waiting in an outbox, and every event id still in an outbox (published rows are kept for a
   while) is on its topic (the ``ce_id`` header).
3. **Views** (data hub database, the set that serves): one holding per subscription, with the
   same state and balance; the same postings per subscription; one registered view per customer
   (when the customer database is given).

Each difference is printed on its own line; the exit status is 1 when there is any, 0 when
everything reconciles. ``--wait S`` checks again until clean or ``S`` seconds have passed (a
view catching up after a fault is not a difference yet). It reads the databases with plain SQL
(no capability's code: it is a bank's reconciliation job, outside every service) and Kafka with
a group-less consumer. Settings come from flags, else ``ZT_RECONCILE_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: ``bank.product.v1.Transaction.Direction`` and ``Subscription.State`` values.
CREDIT, DEBIT = 1, 2
#: Minor-unit exponents, as in services.kit.money (a currency not listed counts as 2).
_EXPONENT = {"JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3}
_MICROS = 1_000_000
#: An outbox row younger than this is not late yet (the relay publishes within ~100 ms).
OUTBOX_GRACE_S = 5.0


@dataclass
class Report:
    """What one reconciliation found: figures checked and differences."""

    figures: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    def differ(self, message: str) -> None:
        self.differences.append(message)

    @property
    def clean(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class Sources:
    product_db: str
    hub_db: str = ""
    customer_db: str = ""
    kafka: str = ""
    topic_prefix: str = ""
    dlq_topic: str = "data-hub.dlq"


def _micros(minor: int, currency: str) -> int:
    return minor * (_MICROS // 10 ** _EXPONENT.get(currency, 2))


async def _rows(engine: AsyncEngine, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql))).all()]


async def check_ledger(product: AsyncEngine, report: Report) -> dict[str, tuple[int, int, str]]:
    """Balances against postings; returns subscription id → (balance minor, state, currency)."""
    subs = await _rows(
        product, "SELECT subscription_id, amount_minor, balance_minor, state, currency FROM subscriptions"
    )
    sums = await _rows(
        product,
        "SELECT subscription_id, direction, COUNT(*), COALESCE(SUM(amount_minor), 0) FROM transactions "
        "GROUP BY subscription_id, direction",
    )
    moved: dict[str, int] = Counter()
    for sub_id, direction, _count, amount in sums:
        moved[sub_id] += int(amount) if direction == CREDIT else -int(amount)
    ledger: dict[str, tuple[int, int, str]] = {}
    for sub_id, opening, balance, state, currency in subs:
        ledger[sub_id] = (int(balance), int(state), currency)
        expected = int(opening) + moved.get(sub_id, 0)
        if int(balance) != expected:
            report.differ(
                f"ledger: subscription {sub_id} balance {balance} != opening {opening} + postings = {expected}"
            )
    for sub_id in set(moved) - set(ledger):
        report.differ(f"ledger: postings for unknown subscription {sub_id}")
    report.figures["subscriptions"] = len(subs)
    report.figures["postings"] = sum(int(c) for _s, _d, c, _a in sums)
    return ledger


async def check_outbox(name: str, engine: AsyncEngine, sources: Sources, report: Report) -> None:
    """Nothing committed is left unpublished; every event id still in the outbox is on Kafka."""
    rows = await _rows(engine, "SELECT event_id, topic, published_at, created_at FROM outbox")
    now = time.time()
    late = [r for r in rows if r[2] is None and now - r[3].timestamp() > OUTBOX_GRACE_S]
    for event_id, topic, _p, created in late[:20]:
        report.differ(f"outbox: {name} event {event_id} for {topic} unpublished since {created.isoformat()}")
    if len(late) > 20:
        report.differ(f"outbox: {name} has {len(late) - 20} more unpublished events")
    report.figures[f"{name}_outbox_rows"] = len(rows)
    if not sources.kafka:
        return
    published = [r for r in rows if r[2] is not None]
    on_kafka = await kafka_event_ids(sources.kafka, {sources.topic_prefix + t for _e, t, _p, _c in published})
    missing = [e for e, t, _p, _c in published if e not in on_kafka.get(sources.topic_prefix + t, set())]
    for event_id in missing[:20]:
        report.differ(f"topics: {name} event {event_id} is marked published but is not on its topic")
    if len(missing) > 20:
        report.differ(f"topics: {len(missing) - 20} more {name} events missing from Kafka")
    report.figures[f"{name}_events_on_kafka"] = len(published) - len(missing)


async def kafka_event_ids(bootstrap: str, topics: set[str]) -> dict[str, set[str]]:
    """Every ``ce_id`` header on the topics, read from the beginning to the current end (a
    record without one counts as ``record@<topic>:<partition>:<offset>``); a topic that does not
    exist is empty."""
    from aiokafka import AIOKafkaConsumer

    found: dict[str, set[str]] = {t: set() for t in topics}
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await probe.start()
    try:
        existing = topics & await probe.topics()
    finally:
        await probe.stop()
    if not existing:
        return found
    consumer = AIOKafkaConsumer(
        *sorted(existing),
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        group_id=None,  # no group: every partition of the topics is assigned to this consumer
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        parts = sorted(consumer.assignment())
        if not parts:
            return found
        await consumer.seek_to_beginning(*parts)
        ends = {tp: off for tp, off in (await consumer.end_offsets(parts)).items() if off > 0}
        give_up = time.monotonic() + 60  # bounded: what is not read by then counts as missing
        while ends and time.monotonic() < give_up:
            batch = await consumer.getmany(*ends, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    ids = [v.decode() for k, v in record.headers or () if k == "ce_id"]
                    found[tp.topic].add(ids[0] if ids else f"record@{tp.topic}:{tp.partition}:{record.offset}")
            for tp in list(ends):
                if await consumer.position(tp) >= ends[tp]:
                    del ends[tp]
    finally:
        await consumer.stop()
    return found


async def check_dead_letters(sources: Sources, report: Report) -> None:
    """An event on a dead-letter topic was not applied: a difference until someone replays it."""
    topic = sources.topic_prefix + sources.dlq_topic
    dead = (await kafka_event_ids(sources.kafka, {topic}))[topic]
    if dead:
        report.differ(f"dead letters: {len(dead)} events on {topic}, e.g. {sorted(dead)[0]}")
    report.figures["dead_letters"] = len(dead)


async def check_views(
    hub: AsyncEngine, product: AsyncEngine, ledger: dict[str, tuple[int, int, str]], report: Report
) -> None:
    """The serving set of views against the ledger: holdings, balances, states, postings."""
    active = (await _rows(hub, "SELECT active FROM dh_state WHERE id = 1"))[0][0]
    holdings = {
        r[0]: (int(r[1]), int(r[2]))
        for r in await _rows(hub, f"SELECT subscription_id, balance_micros, state FROM dh_{active}_holdings")  # noqa: S608 - a or b
    }
    for sub_id, (balance, state, currency) in sorted(ledger.items()):
        held = holdings.get(sub_id)
        if held is None:
            report.differ(f"views: subscription {sub_id} has no holding in the customer view")
        elif held != (_micros(balance, currency), state):
            report.differ(
                f"views: holding {sub_id} balance/state {held[0]}/{held[1]} "
                f"!= ledger {_micros(balance, currency)}/{state} (micros/state)"
            )
    for sub_id in sorted(set(holdings) - set(ledger)):
        report.differ(f"views: holding {sub_id} is not in the ledger")
    hub_posts = dict(
        await _rows(hub, f"SELECT subscription_id, COUNT(*) FROM dh_{active}_transactions GROUP BY subscription_id")  # noqa: S608
    )
    ledger_posts = dict(
        await _rows(product, "SELECT subscription_id, COUNT(*) FROM transactions GROUP BY subscription_id")
    )
    for sub_id in sorted(set(hub_posts) | set(ledger_posts)):
        if int(hub_posts.get(sub_id, 0)) != int(ledger_posts.get(sub_id, 0)):
            report.differ(
                f"views: subscription {sub_id} has {hub_posts.get(sub_id, 0)} postings in the views, "
                f"{ledger_posts.get(sub_id, 0)} in the ledger"
            )
    report.figures["holdings"] = len(holdings)


async def check_customers(hub: AsyncEngine, customers: AsyncEngine, report: Report) -> None:
    active = (await _rows(hub, "SELECT active FROM dh_state WHERE id = 1"))[0][0]
    known = {r[0] for r in await _rows(customers, "SELECT customer_id FROM customers")}
    viewed = {r[0] for r in await _rows(hub, f"SELECT customer_id FROM dh_{active}_customers WHERE registered")}  # noqa: S608
    for customer_id in sorted(known - viewed)[:20]:
        report.differ(f"views: customer {customer_id} has no registered view")
    for customer_id in sorted(viewed - known)[:20]:
        report.differ(f"views: view of customer {customer_id} who does not exist")
    report.figures["customers"] = len(known)


async def reconcile(sources: Sources) -> Report:
    report = Report()
    engines: list[AsyncEngine] = []

    def engine(url: str) -> AsyncEngine:
        made = (
            create_async_engine(url, pool_size=2, max_overflow=0) if "sqlite" not in url else create_async_engine(url)
        )
        engines.append(made)
        return made

    try:
        product = engine(sources.product_db)
        ledger = await check_ledger(product, report)
        await check_outbox("product", product, sources, report)
        customers = engine(sources.customer_db) if sources.customer_db else None
        if customers is not None:
            await check_outbox("customer", customers, sources, report)
        if sources.kafka and sources.hub_db:
            await check_dead_letters(sources, report)
        if sources.hub_db:
            hub = engine(sources.hub_db)
            await check_views(hub, product, ledger, report)
            if customers is not None:
                await check_customers(hub, customers, report)
    finally:
        for made in engines:
            await made.dispose()
    return report


async def reconcile_until_clean(sources: Sources, wait_s: float) -> tuple[Report, float]:
    """Reconcile, again every 0.5 s while there are differences, for up to ``wait_s``;
    returns the last report and the seconds it took to be clean (or the time spent)."""
    started = time.monotonic()
    while True:
        report = await reconcile(sources)
        spent = time.monotonic() - started
        if report.clean or spent >= wait_s:
            return report, spent
        await asyncio.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="zhongtai reconcile", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--product-db", default=env("ZT_RECONCILE_PRODUCT_DATABASE_URL", ""))
    parser.add_argument("--hub-db", default=env("ZT_RECONCILE_DATAHUB_DATABASE_URL", ""))
    parser.add_argument("--customer-db", default=env("ZT_RECONCILE_CUSTOMER_DATABASE_URL", ""))
    parser.add_argument("--kafka", default=env("ZT_RECONCILE_KAFKA_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--topic-prefix", default=env("ZT_KAFKA_TOPIC_PREFIX", ""))
    parser.add_argument("--dlq-topic", default="data-hub.dlq", help="the data hub's dead-letter topic (no prefix)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the views to catch up")
    args = parser.parse_args(argv)
    if not args.product_db:
        parser.error("--product-db (or ZT_RECONCILE_PRODUCT_DATABASE_URL) is required")
    sources = Sources(args.product_db, args.hub_db, args.customer_db, args.kafka, args.topic_prefix, args.dlq_topic)
    report, spent = asyncio.run(reconcile_until_clean(sources, args.wait))
    print("checked: " + ", ".join(f"{k} {v}" for k, v in report.figures.items()))
    for line in report.differences:
        print(f"DIFFERENCE {line}")
    if report.clean:
        print(f"reconciled: no difference ({spent:.1f} s)")
        return 0
    print(f"{len(report.differences)} difference(s)", file=sys.stderr)
    return 1
