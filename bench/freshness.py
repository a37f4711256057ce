"""Benchmark: write acknowledged -> view updated, p50/p99 at a steady write rate (not a test).

The customer and product services are not wired into this benchmark yet, so a "write" here is
what they publish after a committed write: a TransactionPosted event produced with an
idempotent producer (acks=all). Latency = from the broker's ack of that event to the moment
the updated CustomerView (its last_event_time covering the write) arrives on the compacted
topic bank.customer-view.v1 — i.e. consumed, applied, committed, rendered and published. (A view
is readable through GetCustomerView right after its commit, before it is published: this is an
upper bound of that.)

Uses ZT_TEST_KAFKA_BOOTSTRAP / ZT_TEST_POSTGRES_URL when set, else starts Kafka + PostgreSQL;
the hub runs as a real process (``python -m services.cli data_hub``) on PostgreSQL.

    .venv/bin/python bench/freshness.py [--rate 200] [--duration 20] [--customers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from bank.datahub.v1 import datahub_pb2  # noqa: E402
from bank.product.v1 import events_pb2 as pev  # noqa: E402
from bank.product.v1 import product_pb2  # noqa: E402
from devtools import stack  # noqa: E402
from devtools.synth import Synth, SynthEvent, money, produce, ts  # noqa: E402
from services.kit.events import TOPIC_CUSTOMER_VIEW, build_record  # noqa: E402
from services.kit.kafka import ensure_topics, make_producer  # noqa: E402
from tests.support.procs import ServiceProcess  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()
    kafka, pg = stack.kafka_for_tests(), stack.postgres_for_tests()
    kafka.start()
    pg.start()
    bootstrap = kafka.bootstrap_servers
    url = pg.create_database(f"bench_fresh_{uuid.uuid4().hex[:8]}")
    await ensure_topics(bootstrap, partitions=3)
    prefix = f"f{uuid.uuid4().hex[:4]}"
    seed = Synth(seed=77, customers=args.customers, months=2, prefix=prefix, txn_scale=0.3)
    events = seed.events()
    customers = sorted({e.aggregate_id for e in events if e.aggregate_type == "customer"})
    # One bench subscription per customer, opened now; writes post to it with rising versions.
    now = datetime.now(UTC)
    versions: dict[str, int] = {}
    for cid in customers:
        sid = f"{cid}-bench"
        sub = product_pb2.Subscription(
            subscription_id=sid,
            customer_id=cid,
            product_id="dep-current",
            product_type=1,
            amount=money(100_000),
            balance=money(100_000),
            state=1,
            create_time=ts(now),
        )
        events.append(
            SynthEvent(
                pev.SubscriptionOpened(
                    customer_id=cid, subscription_id=sid, subscription=sub, version=1, occur_time=ts(now)
                ),
                "bench",
                "subscription",
                sid,
                1,
                now,
                str(uuid.uuid4()),
            )
        )
        versions[sid] = 1
    await produce([e.record() for e in events], bootstrap, client_id="bench-seed")
    hub = ServiceProcess(
        "data_hub",
        env={
            "ZT_DATABASE_URL": url,
            "ZT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ZT_DATAHUB_GROUP_ID": f"fresh-{prefix}",
            "ZT_LOG_LEVEL": "WARNING",
        },
        log_dir=Path(tempfile.mkdtemp(prefix="zt-fresh-")),
    )
    hub.start()
    views = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        auto_offset_reset="latest",
    )
    await views.start()
    producer = make_producer(bootstrap, client_id="bench-writes", linger_ms=0)
    await producer.start()
    pending: dict[str, list[tuple[int, float]]] = {}
    latencies: list[float] = []
    try:
        tps = [
            TopicPartition(TOPIC_CUSTOMER_VIEW, p)
            for p in sorted(views.partitions_for_topic(TOPIC_CUSTOMER_VIEW) or {0, 1, 2})
        ]
        views.assign(tps)
        # Wait until the seed is fully rendered: the view topic goes quiet.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            got = await views.getmany(timeout_ms=500)
            if any(got.values()):
                quiet_since = time.monotonic()
        await views.seek_to_end(*tps)

        async def read_views(stop: asyncio.Event) -> None:
            while not stop.is_set() or any(pending.values()):
                got = await views.getmany(timeout_ms=50)
                arrived = time.perf_counter()
                for records in got.values():
                    for r in records:
                        view = datahub_pb2.CustomerView.FromString(r.value)
                        covered = view.last_event_time.seconds * 1_000_000 + view.last_event_time.nanos // 1000
                        waiting = pending.get(view.customer_id, [])
                        done = [w for w in waiting if w[0] <= covered]
                        pending[view.customer_id] = [w for w in waiting if w[0] > covered]
                        latencies.extend((arrived - acked) * 1000 for _, acked in done)

        async def write(cid: str, k: int) -> None:
            sid = f"{cid}-bench"
            versions[sid] += 1
            when = datetime.now(UTC)
            occur_us = int(when.timestamp() * 1_000_000)
            txn = product_pb2.Transaction(
                transaction_id=f"{sid}-{k}",
                subscription_id=sid,
                customer_id=cid,
                direction=1,
                amount=money(1_000),
                balance_after=money(100_000 + 1_000 * k),
                post_time=ts(when),
            )
            payload = pev.TransactionPosted(
                customer_id=cid,
                subscription_id=sid,
                product_id="dep-current",
                product_type=1,
                transaction=txn,
                version=versions[sid],
                occur_time=ts(when),
            )
            rec = build_record(
                payload, source="bench", aggregate_type="subscription", aggregate_id=sid, version=versions[sid]
            )
            fut = await producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers)
            await fut
            pending.setdefault(cid, []).append((occur_us, time.perf_counter()))

        stop = asyncio.Event()
        reader = asyncio.create_task(read_views(stop))
        rng = random.Random(5)
        interval = 1.0 / args.rate
        total = int(args.rate * args.duration)
        started = time.perf_counter()
        writers = []
        for k in range(total):
            target = started + k * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writers.append(asyncio.create_task(write(rng.choice(customers), k)))
        await asyncio.gather(*writers)
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 30)
        lost = sum(len(v) for v in pending.values())
        achieved = total / (time.perf_counter() - started)
        print(
            f"writes: {total} at {args.rate:.0f}/s target ({achieved:.0f}/s achieved); "
            f"views matched: {len(latencies)}; unmatched: {lost}"
        )
        print(
            f"ack -> view published: p50 {statistics.median(latencies):.1f} ms, p90 {pct(latencies, 90):.1f} ms, "
            f"p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms  (target p99 <= 250 ms)"
        )
    finally:
        await producer.stop()
        await views.stop()
        hub.stop()
        pg.stop()
        kafka.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
