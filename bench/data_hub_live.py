"""Benchmark: the data hub's live path, CPU per event, in one process without the broker (not a test).

What a hub process spends on live traffic once a poll has returned: the consumer's batch (inbox
lookups, the fold, the projection's writes with the customer event feed's rows, ADR 0062, the
inline render of the touched views, the inbox rows, the commit) and the view worker's publish
round (the view records built, their ``pending_publish`` flags cleared). Kafka is left out on
purpose — the records are built in memory as the product service's relay would send them, and
the view worker's producer is a stub that acknowledges at once — so the figure is the hub's own
Python and PostgreSQL per event, free of the fetch/produce round trips and of the machine's
noise around them.
``bench/freshness.py`` and ``bench/services.py`` measure the whole path with the broker.

Per round: a fresh database with a seeded history (customers, subscriptions, two months of
transactions, every view rendered), then ``--batches`` live batches of ``--batch`` postings to
random customers (TransactionPosted, rising versions), one consumer transaction each, each
followed by the view worker's round. Printed: hub CPU µs per event, PostgreSQL CPU µs per event
(the server's processes), transactions per batch
(pg_stat_database: an autocommit statement counts as one) and views published per batch.

    .venv/bin/python bench/data_hub_live.py [--batch 1,5,20] [--batches 100] [--rounds 2]
                                            [--kind posting|subscription] [--customers 200]
                                            [--baseline /tmp/zt-main] [--profile] [--statement-cost]

``--kind subscription``: each live event opens a new subscription of a random customer, so the
views grow a holding with each (as ``bench/services.py``'s CreateSubscription cell does to its
64 customers).

``--baseline DIR``: the same rounds with the code of another checkout (run as a child process
with DIR first on its path), interleaved with this one's: before/after in one run.
``--profile``: cProfile of this checkout's live phase (top functions by own time); with
``BENCH_SAMPLE=<file>`` instead, its stacks sampled every 4 ms of CPU time (``_Sampler``).
``BENCH_MODEL=<artifact>`` (e.g. models/scores.json): the live renders score with that trained
model, as a deployed hub does (default: the rules).
``--statement-cost``: process CPU per statement of one hub read run through
``AsyncSession.execute``, ``exec_driver_sql`` and asyncpg directly (docs/adr/0045).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
#: The topics of the customer event feed (unprefixed, as the records here are).
FEED = ("bank.customer.v1", "bank.subscription.v1")


def _records(customers: int, batch: int, batches: int, kind: str = "posting") -> tuple[list[Any], list[list[Any]]]:
    """The seed history and the live batches, as Kafka records (topic, key, value, headers):
    postings (TransactionPosted) or, ``kind="subscription"``, new subscriptions
    (SubscriptionOpened: each customer's view gains a holding with each)."""
    import random
    from datetime import UTC, datetime

    from bank.product.v1 import events_pb2 as pev
    from bank.product.v1 import product_pb2
    from devtools.synth import Synth, SynthEvent, money, ts
    from services.kit.events import build_record

    events = Synth(seed=77, customers=customers, months=2, prefix="live", txn_scale=0.3).events()
    ids = sorted({e.aggregate_id for e in events if e.aggregate_type == "customer"})
    now = datetime.now(UTC)
    for cid in ids:
        sub = product_pb2.Subscription(
            subscription_id=f"{cid}-bench", customer_id=cid, product_id="dep-current", product_type=1,
            amount=money(100_000), balance=money(100_000), state=1, create_time=ts(now),
        )  # type: ignore[arg-type]  # fmt: skip
        opened = pev.SubscriptionOpened(
            customer_id=cid, subscription_id=sub.subscription_id, subscription=sub, version=1, occur_time=ts(now)
        )
        events.append(SynthEvent(opened, "bench", "subscription", sub.subscription_id, 1, now, str(uuid.uuid4())))
    seed = [e.record() for e in events]
    rng = random.Random(5)
    versions = dict.fromkeys(ids, 1)
    live = []
    for b in range(batches):
        out = []
        for k in range(batch):
            cid = rng.choice(ids)
            when = datetime.now(UTC)
            if kind == "subscription":
                out.append(_opened(cid, f"{cid}-live-{b}-{k}", when))
                continue
            versions[cid] += 1
            sid = f"{cid}-bench"
            txn = product_pb2.Transaction(
                transaction_id=f"{sid}-{b}-{k}", subscription_id=sid, customer_id=cid, direction=1,
                amount=money(1_000), balance_after=money(100_000 + 1_000 * versions[cid]), post_time=ts(when),
            )  # type: ignore[arg-type]  # fmt: skip
            payload = pev.TransactionPosted(
                customer_id=cid, subscription_id=sid, product_id="dep-current", product_type=1,
                transaction=txn, version=versions[cid], occur_time=ts(when),
            )  # type: ignore[arg-type]  # fmt: skip
            out.append(build_record(payload, source="bench", aggregate_type="subscription", aggregate_id=sid,
                                    version=versions[cid]))  # fmt: skip
        live.append(out)
    return seed, live


def _opened(cid: str, sid: str, when: Any) -> Any:
    """A SubscriptionOpened record (version 1) of a new current account of ``cid``."""
    from bank.product.v1 import events_pb2 as pev
    from bank.product.v1 import product_pb2
    from devtools.synth import money, ts
    from services.kit.events import build_record

    sub = product_pb2.Subscription(
        subscription_id=sid, customer_id=cid, product_id="dep-current", product_type=1,
        amount=money(100_000), balance=money(100_000), state=1, version=1, create_time=ts(when),
    )  # type: ignore[arg-type]  # fmt: skip
    opened = pev.SubscriptionOpened(customer_id=cid, subscription_id=sid, subscription=sub, version=1,
                                    occur_time=ts(when))  # fmt: skip
    return build_record(opened, source="bench", aggregate_type="subscription", aggregate_id=sid, version=1)


def _consumer_records(records: list[Any], start: int) -> list[Any]:
    from aiokafka import ConsumerRecord

    from services.kit.inbox import _decode

    out = []
    for i, r in enumerate(records):
        rec = ConsumerRecord(r.topic, 0, start + i, 0, 0, r.key, r.value, None, len(r.key), len(r.value), r.headers)
        out.append((rec, _decode(rec)))
    return out


class _AckingProducer:
    """The view worker's producer, acknowledging every batch at once (the broker is not measured):
    what ``send_all`` uses of a producer, one partition; an older checkout (``--baseline``) calls
    ``send``."""

    sent = 0

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> asyncio.Future[None]:
        self.sent += 1
        return self._done()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.sent += batch.records
        return self._done()

    @staticmethod
    def _done() -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Batch:
    records = 0

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> bool:
        self.records += 1
        return True

    def close(self) -> None:
        pass


async def _transactions(url: str) -> int:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            or 0
        )
    finally:
        await conn.close()


async def child(
    url: str,
    batch: int,
    batches: int,
    customers: int,
    pg_pid: int,
    profile: bool,
    statements: bool = False,
    kind: str = "posting",
) -> dict[str, Any]:
    """One round in this process, with whatever ``services`` is first on the path."""
    from services.data_hub.domain import Rules
    from services.data_hub.main import MIGRATIONS
    from services.data_hub.projector import HubProjection, ViewWorker
    from services.kit.applier import BatchApplier
    from services.kit.db import create_engine
    from services.kit.logging import configure_logging
    from services.kit.migrations import upgrade
    from tests.support.procs import tree_cpu_seconds

    configure_logging("data_hub", "WARNING", stream=sys.stderr)
    rules = Rules.from_json("")
    if os.environ.get("BENCH_MODEL"):  # the trained scores, as `make run` and the chart load them
        import dataclasses

        from services.data_hub import model

        rules = dataclasses.replace(rules, model=model.load(os.environ["BENCH_MODEL"]))
    engine = create_engine(url)
    await upgrade(engine, MIGRATIONS)
    seed, live = _records(customers, batch, batches, kind)
    producer = _AckingProducer()
    worker = ViewWorker(engine, producer, rules)  # type: ignore[arg-type]

    def applier(projection: Any) -> Any:
        # (record_versioned=False: as the hub's consumer runs, ADR 0049)
        return BatchApplier(engine=engine, group_id="bench", handler=None, projection=projection,
                            dead_letters=None, max_attempts=3, retry_backoff_s=0.1, trace_each_max=100,
                            record_versioned=False)  # type: ignore[arg-type]  # fmt: skip

    bulk = applier(HubProjection(on_commit=worker.wake))
    for i in range(0, len(seed), 2000):
        await bulk.transaction(_consumer_records(seed[i : i + 2000], i), [])
    await worker.run_once()
    if statements:
        costs = await statement_cost(engine)
        await engine.dispose()
        return costs
    # The customer event feed is the hub consumer's own work since ADR 0062 (a checkout before
    # it wrote the feed from a separate group, not run here at all).
    feed = {"feed_topics": frozenset(FEED)} if "feed_topics" in inspect.signature(HubProjection).parameters else {}
    live_applier = applier(HubProjection(on_commit=worker.wake, rules=rules, inline_render_max=100, **feed))
    pairs = [_consumer_records(b, len(seed) + i * batch) for i, b in enumerate(live)]
    sent = producer.sent
    commits = await _transactions(url)
    prof = None
    sampler = _Sampler(os.environ.get("BENCH_SAMPLE", "")) if profile else None
    if profile and not sampler:
        import cProfile

        prof = cProfile.Profile(time.process_time)
        prof.enable()
    if sampler:
        sampler.start()
    pg0, cpu0, wall0, t0 = tree_cpu_seconds(pg_pid), time.process_time(), time.perf_counter(), os.times()
    for b in pairs:
        await live_applier.transaction(b, [])
        await worker.run_once(render=False)
    cpu, wall, pg = time.process_time() - cpu0, time.perf_counter() - wall0, tree_cpu_seconds(pg_pid) - pg0
    t1 = os.times()
    if sampler:
        sampler.stop()
    if prof is not None:
        import pstats

        prof.disable()
        # BENCH_SORT=cumulative BENCH_TOP=70 for the call tree's totals
        stats = pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("BENCH_TOP", "25")))
    events = batch * batches
    out = {
        "hub_us": cpu / events * 1e6,
        "pg_us": pg / events * 1e6,
        "sys_us": (t1.system - t0.system) / events * 1e6,
        "wall_ms_per_batch": wall / batches * 1000,
        "transactions_per_batch": (await _transactions(url) - commits) / batches,
        "views_published_per_batch": (producer.sent - sent) / batches,
    }
    await engine.dispose()
    return out


class _Sampler:
    """``--profile`` with ``BENCH_SAMPLE=<file>``: the live phase's stacks sampled every 4 ms of
    the process's CPU time (``ITIMER_PROF``: a CPU profile, unlike a wall-clock sampler on a
    loaded machine, and without cProfile's per-call overhead), written as collapsed stacks
    (``frame;frame;... count``, py-spy's raw format)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.path)

    def _sample(self, signum: int, frame: Any) -> None:
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{code.co_name} ({code.co_filename.split('site-packages/')[-1]}:{frame.f_lineno})")
            frame = frame.f_back
        key = ";".join(reversed(stack))
        self.counts[key] = self.counts.get(key, 0) + 1

    def start(self) -> None:
        import signal

        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, 0.004, 0.004)

    def stop(self) -> None:
        import signal

        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        Path(self.path).write_text("".join(f"{k} {v}\n" for k, v in self.counts.items()))


async def statement_cost(engine: Any, n: int = 1000) -> dict[str, float]:
    """Process CPU µs per statement, the same hub statement (the live render's first read, one
    customer) run ``n`` times in one transaction three ways: SQLAlchemy's ``AsyncSession.execute``,
    ``exec_driver_sql`` of its compiled SQL, and asyncpg directly (``services.kit.fetch``'s way)."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession

    from services.data_hub import activity, schema
    from services.data_hub.domain import Rules

    rules = Rules.from_json("")
    t = schema.SETS["a"]
    stmt, _ = activity.render_queries(t, "postgresql", True, rules.reporting_currency, rules.activity_baseline_days,
                                      rules.balance_lookback_days)  # fmt: skip
    out: dict[str, list[float]] = {}
    async with AsyncSession(engine) as session, session.begin():
        conn = await session.connection()
        ids = list((await session.scalars(select(t.customers.c.customer_id))).all())
        compiled = stmt.compile(dialect=conn.dialect)
        sql, names = str(compiled), list(compiled.positiontup or ())
        binds = {k: compiled.binds[k].effective_value for k in names}
        driver = (await conn.get_raw_connection()).driver_connection

        def args(i: int) -> list[Any]:
            keys = {**binds, "limit": 1, "ids": [ids[i % len(ids)]]}
            return [keys[k] for k in names]

        for _ in range(2):  # interleaved, twice each
            for way in ("session", "exec_driver_sql", "asyncpg"):
                cpu0 = time.process_time()
                for i in range(n):
                    if way == "session":
                        (await session.execute(stmt, {"limit": 1, "ids": [ids[i % len(ids)]]})).mappings().all()
                    elif way == "exec_driver_sql":
                        (await conn.exec_driver_sql(sql, tuple(args(i)))).all()
                    else:
                        await driver.fetch(sql, *args(i))  # type: ignore[union-attr]
                out.setdefault(way, []).append((time.process_time() - cpu0) / n * 1e6)
    return {way: min(v) for way, v in out.items()}


def _run_child(repo: Path, url: str, args: argparse.Namespace, batch: int, pg_pid: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", url, "--code", str(repo),
           "--batch", str(batch), "--batches", str(args.batches), "--customers", str(args.customers),
           "--pg-pid", str(pg_pid), "--kind", args.kind]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=repo)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="1,5,20", help="events per consumer batch (comma-separated)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--kind", choices=("posting", "subscription"), default="posting",
                        help="the live events: postings, or new subscriptions (views gain holdings)")  # fmt: skip
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--statement-cost", action="store_true", help="CPU per statement: SQLAlchemy vs asyncpg")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=HERE, help=argparse.SUPPRESS)
    parser.add_argument("--pg-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path[:0] = [str(args.code)]
    if args.child:
        result = asyncio.run(
            child(
                args.child,
                int(args.batch),
                args.batches,
                args.customers,
                args.pg_pid,
                args.profile,
                args.statement_cost,
                args.kind,
            )
        )
        print(json.dumps(result))
        return 0
    from devtools import stack

    pg = stack.postgres_for_tests()
    pg.start()
    sides = [("this", HERE)] + ([("base", args.baseline.resolve())] if args.baseline else [])
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        if args.profile:
            url = pg.create_database(f"bench_live_{uuid.uuid4().hex[:8]}")
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", url, "--batch",
                            args.batch.split(",")[-1], "--batches", str(args.batches), "--customers",
                            str(args.customers), "--pg-pid", str(pg.pid or 0), "--profile", "--kind", args.kind],
                           check=True)  # fmt: skip
            return 0
        if args.statement_cost:
            url = pg.create_database(f"bench_live_{uuid.uuid4().hex[:8]}")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", url, "--batch", "1", "--customers",
                   str(args.customers), "--statement-cost"]  # fmt: skip
            costs = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"load average {os.getloadavg()[0]:.1f}; process CPU µs per statement (the render's first read, "
                  "best of 2 × 1,000):")  # fmt: skip
            for way, us in costs.items():
                print(f"  {way:16} {us:6.0f} µs  ({us / costs['session']:.2f} × AsyncSession.execute)")
            print(f"  SQLAlchemy's share of a statement's client CPU: {1 - costs['asyncpg'] / costs['session']:.0%}")
            return 0
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.batches} batches of "
              f"{args.kind} events per run, {args.customers} customers")  # fmt: skip
        for round_ in range(args.rounds):
            for batch in (int(b) for b in args.batch.split(",")):
                for label, repo in sides if round_ % 2 == 0 else sides[::-1]:
                    url = pg.create_database(f"bench_live_{uuid.uuid4().hex[:8]}")
                    r = _run_child(repo, url, args, batch, pg.pid or 0)
                    results.setdefault((label, batch), []).append(r)
                    print(f"[{round_ + 1}] {label:4} batch {batch:3}: hub {r['hub_us']:6.0f} µs/event (system "
                          f"{r['sys_us']:.0f}), PostgreSQL {r['pg_us']:5.0f} µs/event; "
                          f"{r['transactions_per_batch']:.1f} transactions, "
                          f"{r['views_published_per_batch']:.1f} views published per batch", flush=True)  # fmt: skip
        print(f"\nmedians (load average {os.getloadavg()[0]:.1f}):")
        for (label, batch), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            hub = statistics.median(r["hub_us"] for r in rs)
            pgu = statistics.median(r["pg_us"] for r in rs)
            print(f"  {label:4} batch {batch:3}: hub {hub:6.0f} µs/event, PostgreSQL {pgu:5.0f} µs/event")
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
