"""Outbox relay benchmark: PostgreSQL → Kafka throughput, and commit → broker-ack latency.

    .venv/bin/python bench/outbox_relay.py [--events 20000] [--rate 500] [--seconds 10]

Starts its own PostgreSQL and Apache Kafka (devtools.stack; or ZT_TEST_POSTGRES_URL /
ZT_TEST_KAFKA_BOOTSTRAP) and measures, in one run:

1. throughput: a backlog of N committed outbox rows drained by one relay (events/s);
2. latency: one writer commits single events at a fixed rate while the relay runs; for each
   event, the time from its transaction's commit to the broker's ack (p50/p99/max). Measured
   twice, for the two ways the relay is deployed:
   - in-process: the writer shares the relay's process and event loop and wakes it after each
     commit, as in a service that runs its own relay (``outbox_relay_enabled``); the writer's
     CPU (ORM unit of work, envelope) competes with the relay's;
   - separate process: the writer is another process (as service replicas are for a standalone
     ``zhongtai relay``); the relay is woken by the NOTIFY its transaction sends at commit.
   Commit and ack times are both read from CLOCK_MONOTONIC (``time.monotonic``), which is one
   clock for every process of the machine.

Not a test: it prints figures. The local PostgreSQL runs with fsync off (a throw-away cluster),
so commit costs are lower than on a durable server; the relay's own cost is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

# The repository first: run as a file, this directory (with its services.py) would come first.
sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from sqlalchemy import func, select  # noqa: E402

from bank.customer.v1 import events_pb2  # noqa: E402
from devtools import stack  # noqa: E402
from services.kit.db import Base, UnitOfWork, create_engine  # noqa: E402
from services.kit.kafka import ensure_topics, make_producer  # noqa: E402
from services.kit.outbox import OutboxRelay, OutboxRow, add_event  # noqa: E402


class TimedRelay(OutboxRelay):
    """The real relay, noting when the broker acked each event."""

    acked: dict[str, float]

    async def _send(self, rows: Sequence[OutboxRow]) -> None:
        await super()._send(rows)
        now = time.monotonic()
        for row in rows:
            self.acked[row.event_id] = now


def event(i: int) -> events_pb2.CustomerCreated:
    customer_id = f"bench-{i % 1000:04d}"
    msg = events_pb2.CustomerCreated(customer_id=customer_id, version=i + 1)
    msg.customer.customer_id = customer_id
    msg.customer.mobile_masked = "138****5678"
    return msg


async def throughput(engine, bootstrap: str, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Events/s draining a backlog of ``n``, and this process's CPU µs an event meanwhile."""
    for start in range(0, n, 500):
        async with UnitOfWork(engine) as uow:
            for i in range(start, min(n, start + 500)):
                msg = event(i)
                add_event(uow.session, msg, source="/bench", aggregate_type="customer",
                          aggregate_id=msg.customer_id, version=i + 1)  # fmt: skip
            await uow.commit()
    relay = OutboxRelay(engine, make_producer(bootstrap, client_id="bench", linger_ms=5), owns_producer=True,
                        batch_size=1000, poll_interval_s=0.05)  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    await relay.start()
    while relay.published_total < n:
        await asyncio.sleep(0.01)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await relay.stop()
    return n / elapsed, cpu / n * 1e6


async def raw_producer(bootstrap: str, n: int) -> float:
    """The same records sent by a bare idempotent producer: the ceiling the relay is compared with."""
    from services.kit.events import build_record

    records = [
        build_record(event(i), source="/bench", aggregate_type="customer", aggregate_id=event(i).customer_id,
                     version=i + 1)
        for i in range(n)
    ]  # fmt: skip
    producer = make_producer(bootstrap, client_id="bench-raw", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    futures = [await producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in records]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await producer.stop()
    return n / elapsed


async def write_at_rate(engine, rate: int, seconds: float, after_commit: list) -> dict[str, float]:  # type: ignore[no-untyped-def,type-arg]
    """Commit one event per transaction at ``rate``/s; each event id → its commit time (monotonic)."""
    committed: dict[str, float] = {}
    interval = 1.0 / rate
    total = int(rate * seconds)
    next_at = time.monotonic()
    for i in range(total):
        async with UnitOfWork(engine, after_commit=after_commit) as uow:
            msg = event(10_000_000 + i)
            row = add_event(uow.session, msg, source="/bench", aggregate_type="customer",
                            aggregate_id=msg.customer_id, version=10_000_000 + i)  # fmt: skip
            await uow.commit()
        committed[row.event_id] = time.monotonic()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return committed


async def latency(  # type: ignore[no-untyped-def]
    engine, bootstrap: str, rate: int, seconds: float, *, separate: bool = False
) -> tuple[list[float], float]:
    """Commit → ack times (ms, sorted), and this process's CPU µs an event meanwhile (the relay's
    alone when the writer is another process)."""
    relay = TimedRelay(engine, make_producer(bootstrap, client_id="bench-lat", linger_ms=0), owns_producer=True,
                       batch_size=500, poll_interval_s=0.5)  # fmt: skip
    relay.acked = {}
    await relay.start()
    await asyncio.sleep(1.0)  # producer connected
    cpu = time.process_time()
    if separate:
        await asyncio.wait_for(relay.listening.wait(), 10)
        committed = await asyncio.to_thread(write_in_child, engine.url.render_as_string(hide_password=False),
                                            rate, seconds)  # fmt: skip
    else:
        committed = await write_at_rate(engine, rate, seconds, [relay.wake])
    deadline = time.monotonic() + 30
    while len(relay.acked) < len(committed) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu
    await relay.stop()
    times = sorted((relay.acked[k] - committed[k]) * 1000 for k in committed if k in relay.acked)
    return times, cpu / len(committed) * 1e6


def write_in_child(url: str, rate: int, seconds: float) -> dict[str, float]:
    """Run the writer as another process (``--writer-child``); its commit times come back in a file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "committed.json"
        cmd = [
            sys.executable,
            __file__,
            "--writer-child",
            url,
            str(out),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ]
        subprocess.run(cmd, check=True, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
        committed: dict[str, float] = json.loads(out.read_bytes())
    return committed


async def writer_child(url: str, rate: int, seconds: float) -> dict[str, float]:
    engine = create_engine(url, pool_size=2)
    async with engine.connect():
        pass  # connected before the clock starts
    committed = await write_at_rate(engine, rate, seconds, [])
    await engine.dispose()
    return committed


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def main_async(args: argparse.Namespace, pg_url: str, bootstrap: str) -> None:
    await ensure_topics(bootstrap)
    engine = create_engine(pg_url, pool_size=10)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    raw = await raw_producer(bootstrap, args.events)
    rate, drain_cpu = await throughput(engine, bootstrap, args.events)
    async with engine.begin() as conn:
        await conn.execute(OutboxRow.__table__.delete())
    lat, lat_cpu = await latency(engine, bootstrap, args.rate, args.seconds)
    lat_separate, separate_cpu = await latency(engine, bootstrap, args.rate, args.seconds, separate=True)
    async with engine.connect() as conn:
        left = await conn.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None)))
    await engine.dispose()
    print(f"relay throughput (PostgreSQL → Kafka, backlog of {args.events}): {rate:,.0f} events/s  (target ≥ 5,000); "
          f"relay CPU {drain_cpu:.0f} µs/event")  # fmt: skip
    print(f"bare aiokafka producer, same records, same run:   {raw:,.0f} events/s  (relay/raw = {rate / raw:.2f})")
    for where, values, cpu in (
        ("writer in the relay's process", lat, f"writer + relay CPU {lat_cpu:.0f} µs/event"),
        ("writer in another process", lat_separate, f"relay CPU {separate_cpu:.0f} µs/event"),
    ):
        print(
            f"commit → broker ack at {args.rate}/s for {args.seconds:.0f}s, {where} ({len(values)} events): "
            f"p50 {statistics.median(values):.1f} ms, p99 {pct(values, 0.99):.1f} ms, max {values[-1]:.1f} ms"
            f"  (target p99 ≤ 50 ms); {cpu}"
        )
    print(f"unpublished rows left: {left}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writer-child", nargs=2, metavar=("DB_URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer_child:
        url, out = args.writer_child
        Path(out).write_text(json.dumps(asyncio.run(writer_child(url, args.rate, args.seconds))))
        return
    kafka, postgres = stack.kafka_for_tests(), stack.postgres_for_tests()
    kafka.start()
    postgres.start()
    try:
        url = postgres.create_database(f"bench_outbox_{uuid.uuid4().hex[:8]}")  # (reruns on one server)
        print(f"against {kafka.description} and {postgres.description}")
        asyncio.run(main_async(args, url, kafka.bootstrap_servers))
    finally:
        postgres.stop()
        kafka.stop()


if __name__ == "__main__":
    main()
