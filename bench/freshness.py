"""Benchmark: write acknowledged -> view updated, p50/p99 at a steady write rate (not a test).

``--via services`` (default): customer, product and data hub run as real processes
(``python -m services.cli <name>``) on PostgreSQL and Kafka (devtools.stack); customers,
subscriptions and the catalogue are created through their gRPC APIs, then writes are
``ProductService.PostTransaction`` calls at a steady rate. Latency = from the RPC's response
(the write is committed, with its event in the product service's outbox) to the arrival of the
CustomerView covering it (``last_event_time`` >= the transaction's ``post_time``) on the view
topic — i.e. relay publish, hub consume/apply/render/commit, view publish.

``--via events``: only the hub runs; a "write" is a TransactionPosted event produced with an
idempotent producer (acks=all) as the product service's relay would; latency runs from the
broker's ack to the view's arrival.

Each run uses its own topic namespace (ZT_KAFKA_TOPIC_PREFIX), so runs on one broker do not
see each other. Uses ZT_TEST_KAFKA_BOOTSTRAP / ZT_TEST_POSTGRES_URL when set, else starts Kafka +
PostgreSQL. (A view is readable through GetCustomerView right after the hub's commit, before it
is published: the figures are an upper bound of that.)

    .venv/bin/python bench/freshness.py [--via services|events] [--rate 200] [--duration 20] [--customers 200]
                                        [--baseline DIR --rounds N] [--warmup SECONDS]

``--warmup S`` (10 unless given; 0 for none): runs of S seconds left out of the figures, until
the broker's JIT compilers used at most 5 % of a core during the last one (``JIT_QUIET_SHARE``; at
most six): the broker's first minutes after its start were the slowest of every invocation, its
compilers still busy (ADR 0066).
Each run prints the broker's CPU per write and the part of it its JIT compilers spent.

Each run also prints where the time went (:data:`STAGES`): ack -> the hub's render of the view,
render -> the view record's send, send -> its arrival here, p50/p99 and the slowest 1 %'s mean.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from collections.abc import Awaitable, Callable  # noqa: E402
from datetime import date  # noqa: E402

import grpc  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from google.type import date_pb2  # noqa: E402

from bank.customer.v1 import customer_pb2, customer_pb2_grpc  # noqa: E402
from bank.datahub.v1 import datahub_pb2  # noqa: E402
from bank.product.v1 import events_pb2 as pev  # noqa: E402
from bank.product.v1 import product_pb2, product_pb2_grpc  # noqa: E402
from devtools import stack  # noqa: E402
from devtools.synth import SURNAMES, Synth, SynthEvent, catalogue, money, national_id, produce, ts  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.kit.auth import ALL_SCOPES, mint_token  # noqa: E402
from services.kit.events import TOPIC_CUSTOMER_VIEW, build_record  # noqa: E402
from services.kit.kafka import ensure_topics, make_producer  # noqa: E402
from tests.support.procs import JIT_QUIET_SHARE, ServiceProcess, cpu_seconds, jit_cpu_seconds, tree_cpu_seconds  # noqa: E402

#: A write: (customer id, the view's last_event_time that covers it in µs, perf_counter at the ack).
Acked = tuple[str, int, float]

#: The stages of a write's way to its view, each in ms, from clocks of this machine:
#: ack -> the hub's render of the view (its ``update_time``: relay, broker, the hub's fetch and
#: batch up to the render), render -> the view record's timestamp (the batch's commit, the view
#: worker's wake-up and publish round up to its ``send``), timestamp -> arrival here (the
#: producer's linger and ack wait, the broker, this reader's fetch).
STAGES = ("ack->render", "render->send", "send->arrival")


#: ``--warmup``: warm-up runs go on (at most this many) while the broker's JIT compilers used more
#: than :data:`~tests.support.procs.JIT_QUIET_SHARE` of a core during the last one. A broker in
#: service has long compiled its hot paths; a freshly started one spends ~20 % of a core compiling
#: during its first run at 200 writes/s, and the first run measured after a single 10-s warm-up had
#: twice the p99 of the next ones (2026-12-07: 312 ms with 945 µs of JIT a write, then 123-155 ms
#: with 112-355 µs).
WARMUP_RUNS = 6


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def us(stamp: object) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000  # type: ignore[attr-defined]


def process(component: str, log_dir: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(component, env={"ZT_LOG_LEVEL": "WARNING", **env}, log_dir=log_dir)


async def seed_events(
    args: argparse.Namespace, bootstrap: str, ns: str
) -> tuple[list[str], Callable[[int], Awaitable[Acked]]]:
    """--via events: a synthetic history produced to the namespace; writes are produced events."""
    prefix = f"f{uuid.uuid4().hex[:4]}"
    events = Synth(seed=77, customers=args.customers, months=2, prefix=prefix, txn_scale=0.3).events()
    customers = sorted({e.aggregate_id for e in events if e.aggregate_type == "customer"})
    # One bench subscription per customer, opened now; writes post to it with rising versions.
    now = datetime.now(UTC)
    versions: dict[str, int] = {}
    for cid in customers:
        sid = f"{cid}-bench"
        sub = product_pb2.Subscription(
            subscription_id=sid, customer_id=cid, product_id="dep-current", product_type=1,
            amount=money(100_000), balance=money(100_000), state=1, create_time=ts(now),
        )  # fmt: skip
        opened = pev.SubscriptionOpened(
            customer_id=cid, subscription_id=sid, subscription=sub, version=1, occur_time=ts(now)
        )
        events.append(SynthEvent(opened, "bench", "subscription", sid, 1, now, str(uuid.uuid4())))
        versions[sid] = 1
    records = [e.record() for e in events]
    await produce([dataclasses.replace(r, topic=ns + r.topic) for r in records], bootstrap, client_id="bench-seed")
    producer = make_producer(bootstrap, client_id="bench-writes", linger_ms=0)
    await producer.start()
    rng = random.Random(5)

    async def write(k: int) -> Acked:
        cid = rng.choice(customers)
        sid = f"{cid}-bench"
        versions[sid] += 1
        when = datetime.now(UTC)
        txn = product_pb2.Transaction(
            transaction_id=f"{sid}-{k}", subscription_id=sid, customer_id=cid, direction=1,
            amount=money(1_000), balance_after=money(100_000 + 1_000 * k), post_time=ts(when),
        )  # fmt: skip
        payload = pev.TransactionPosted(
            customer_id=cid, subscription_id=sid, product_id="dep-current", product_type=1,
            transaction=txn, version=versions[sid], occur_time=ts(when),
        )  # fmt: skip
        rec = build_record(
            payload, source="bench", aggregate_type="subscription", aggregate_id=sid, version=versions[sid]
        )
        await (await producer.send(ns + rec.topic, value=rec.value, key=rec.key, headers=rec.headers))
        return cid, int(when.timestamp() * 1_000_000), time.perf_counter()

    write.producer = producer  # type: ignore[attr-defined]
    return customers, write


async def seed_services(
    args: argparse.Namespace, customer: ServiceProcess, product: ServiceProcess
) -> tuple[list[str], Callable[[int], Awaitable[Acked]], grpc.aio.Channel, grpc.aio.Channel]:
    """--via services: catalogue, customers (KYC, risk) and one subscription each, over gRPC."""
    meta = (("authorization", f"Bearer {mint_token(DEV_SECRET, sorted(ALL_SCOPES), client_id='bench')}"),)
    cch, pch = grpc.aio.insecure_channel(customer.target), grpc.aio.insecure_channel(product.target)
    customers_api, products_api = customer_pb2_grpc.CustomerServiceStub(cch), product_pb2_grpc.ProductServiceStub(pch)
    for p in catalogue(datetime.now(UTC)):
        draft = product_pb2.Product(product_id=p.product_id, display_name=p.display_name, type=p.type,
                                    risk_level=p.risk_level, terms=p.terms, eligibility=p.eligibility)  # fmt: skip
        await products_api.CreateProduct(product_pb2.CreateProductRequest(product=draft), metadata=meta, timeout=10)
        await products_api.PublishProduct(
            product_pb2.PublishProductRequest(product_id=p.product_id), metadata=meta, timeout=10
        )
    rng = random.Random(77)
    run = uuid.uuid4().hex[:6]
    subs: dict[str, str] = {}
    gate = asyncio.Semaphore(16)

    async def onboard(i: int) -> None:
        birth = date(rng.randint(1960, 2000), rng.randint(1, 12), rng.randint(1, 28))
        async with gate:
            created = await customers_api.CreateCustomer(
                customer_pb2.CreateCustomerRequest(
                    customer=customer_pb2.Customer(
                        full_name=rng.choice(SURNAMES) + "伟", national_id=national_id(rng, birth),
                        mobile=f"13{rng.randint(0, 999_999_999):09d}", email=f"bench{run}-{i}@example.com",
                        birth_date=date_pb2.Date(year=birth.year, month=birth.month, day=birth.day),
                    )
                ), metadata=meta, timeout=10,
            )  # fmt: skip
            cid = created.customer_id
            await customers_api.VerifyCustomer(
                customer_pb2.VerifyCustomerRequest(
                    customer_id=cid, outcome=customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
                ), metadata=meta, timeout=10,
            )  # fmt: skip
            await customers_api.AssessRisk(
                customer_pb2.AssessRiskRequest(customer_id=cid, questionnaire_score=rng.randint(5, 95)),
                metadata=meta, timeout=10,
            )  # fmt: skip
            sub = await products_api.CreateSubscription(
                product_pb2.CreateSubscriptionRequest(
                    customer_id=cid,
                    subscription=product_pb2.Subscription(product_id="dep-current", amount=money(10_000_000)),
                ), metadata=meta, timeout=10,
            )  # fmt: skip
            subs[cid] = sub.subscription_id

    await asyncio.gather(*(onboard(i) for i in range(args.customers)))
    customers = sorted(subs)
    pick = random.Random(5)

    async def write(k: int) -> Acked:
        cid = pick.choice(customers)
        txn = await products_api.PostTransaction(
            product_pb2.PostTransactionRequest(
                customer_id=cid, subscription_id=subs[cid],
                transaction=product_pb2.Transaction(direction=product_pb2.Transaction.DIRECTION_CREDIT,
                                                    amount=money(1_000)),
            ), metadata=meta, timeout=10,
        )  # fmt: skip
        return cid, us(txn.post_time), time.perf_counter()

    return customers, write, cch, pch


@dataclasses.dataclass
class Run:
    """One measured run: latencies and the CPU each process spent while the writes went in."""

    label: str
    latencies: list[float]
    writes: int
    achieved: float
    errors: dict[str, int]
    unmatched: int
    cpu_s: dict[str, float]  # hub, Kafka, PostgreSQL (whole server): CPU seconds in the write phase
    seconds: float  # the write phase's length (the writes, then the last views' arrival)
    #: Per matched write, the ms of each of :data:`STAGES`.
    stages: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)


def servers_cpu(kafka: object, pg: object, hub: ServiceProcess) -> dict[str, float]:
    """CPU seconds so far of the hub process, the broker's JVM and PostgreSQL (NaN if not ours),
    and the part of the broker's that its JIT compilers spent ("of it JIT": its warm-up)."""
    nan = float("nan")
    kafka_pid, pg_pid = getattr(kafka, "pid", None), getattr(pg, "pid", None)
    return {
        "hub": cpu_seconds(hub.proc.pid) if hub.proc is not None else nan,
        "Kafka": tree_cpu_seconds(kafka_pid) if kafka_pid else nan,
        "of it JIT": jit_cpu_seconds(kafka_pid) if kafka_pid else nan,  # (printed right after "Kafka")
        "PostgreSQL": tree_cpu_seconds(pg_pid) if pg_pid else nan,
    }


async def one_run(args: argparse.Namespace, kafka: Any, pg: Any, label: str, repo: Path | None) -> Run:
    """Seed, start the hub (from ``repo`` when given: a baseline checkout), write at the rate,
    and collect each write's ack -> view latency in a fresh topic namespace."""
    bootstrap = kafka.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    ns = f"fresh{run}."  # this run's topic namespace
    logs = Path(tempfile.mkdtemp(prefix="zt-fresh-"))
    common = {"ZT_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ZT_KAFKA_TOPIC_PREFIX": ns}
    await ensure_topics(bootstrap, partitions=3, prefix=ns)
    procs: list[ServiceProcess] = []
    channels: list[grpc.aio.Channel] = []
    views = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=5,
        auto_offset_reset="latest",
    )  # fmt: skip
    await views.start()
    pending: dict[str, list[tuple[int, float]]] = {}
    latencies: list[float] = []
    stages: list[tuple[float, float, float]] = []
    # (perf_counter -> wall clock µs, for the stages: the hub's stamps are wall-clock)
    wall_offset_us = time.time() * 1e6 - time.perf_counter() * 1e6
    errors: collections.Counter[str] = collections.Counter()
    write: Callable[[int], Awaitable[Acked]] | None = None
    try:
        hub_env = dict(kv.split("=", 1) for kv in args.hub_env)
        hub_vars = {"ZT_DATABASE_URL": pg.create_database(f"bench_fresh_hub_{run}"), "ZT_DATAHUB_GROUP_ID": "fresh",
                    **common, **hub_env}  # fmt: skip
        if repo is None:
            hub = process("data_hub", logs, **hub_vars)
        else:  # the baseline's hub: the same process, run from the other checkout (bench/services.py's)
            from bench.services import _Proc

            hub = _Proc("data_hub", env={"ZT_LOG_LEVEL": "WARNING", **hub_vars}, log_dir=logs, repo=repo)
        if args.via == "services":
            customer = process("customer", logs, ZT_DATABASE_URL=pg.create_database(f"bench_fresh_cust_{run}"),
                               **common)  # fmt: skip
            procs.append(customer.start(120))
            product = process("product", logs, ZT_DATABASE_URL=pg.create_database(f"bench_fresh_prod_{run}"),
                              ZT_CUSTOMER_TARGET=customer.target, **common)  # fmt: skip
            procs.append(product.start(120))
            procs.append(hub.start(120))
            customers, write, *chans = await seed_services(args, customer, product)
            channels.extend(chans)
        else:
            customers, write = await seed_events(args, bootstrap, ns)
            procs.append(hub.start(120))
        view_topic = ns + TOPIC_CUSTOMER_VIEW
        tps = [TopicPartition(view_topic, p) for p in sorted(views.partitions_for_topic(view_topic) or {0, 1, 2})]
        views.assign(tps)
        # Wait until the seed is fully rendered: the view topic goes quiet.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            got = await views.getmany(timeout_ms=500)
            if any(got.values()):
                quiet_since = time.monotonic()
        await views.seek_to_end(*tps)
        print(f"[{label}] seeded {len(customers)} customers via {args.via}; writing ...", flush=True)

        async def read_views(stop: asyncio.Event) -> None:
            while not stop.is_set() or any(pending.values()):
                got = await views.getmany(timeout_ms=50)
                arrived = time.perf_counter()
                for records in got.values():
                    for r in records:
                        view = datahub_pb2.CustomerView.FromString(r.value)
                        covered = us(view.last_event_time)
                        waiting = pending.get(view.customer_id, [])
                        pending[view.customer_id] = [w for w in waiting if w[0] > covered]
                        matched = [acked for t, acked in waiting if t <= covered]
                        latencies.extend((arrived - acked) * 1000 for acked in matched)
                        rendered_us, sent_us = us(view.update_time), r.timestamp * 1000
                        arrived_us = arrived * 1e6 + wall_offset_us
                        stages.extend(
                            ((rendered_us - (acked * 1e6 + wall_offset_us)) / 1000, (sent_us - rendered_us) / 1000,
                             (arrived_us - sent_us) / 1000)
                            for acked in matched
                        )  # fmt: skip

        async def one(k: int) -> None:
            assert write is not None
            try:
                cid, covered_us, acked = await write(k)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                return
            pending.setdefault(cid, []).append((covered_us, acked))

        stop = asyncio.Event()
        reader = asyncio.create_task(read_views(stop))
        interval = 1.0 / args.rate
        total = int(args.rate * args.duration)
        cpu_before, window = servers_cpu(kafka, pg, hub), time.perf_counter()
        started = time.perf_counter()
        writers = []
        for k in range(total):
            delay = started + k * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writers.append(asyncio.create_task(one(k)))
        await asyncio.gather(*writers)
        achieved = total / (time.perf_counter() - started)
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 30)
        cpu_after, window = servers_cpu(kafka, pg, hub), time.perf_counter() - window
        lost = sum(len(v) for v in pending.values())
        cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
        return Run(label, latencies, total, achieved, dict(errors), lost, cpu, window, stages)
    finally:
        producer = getattr(write, "producer", None)
        if producer is not None:
            await producer.stop()
        for channel in channels:
            await channel.close()
        await views.stop()
        for proc in reversed(procs):
            proc.stop()


def report(run: Run, via: str) -> None:
    lat = run.latencies
    print(
        f"[{run.label}] writes: {run.writes} ({run.achieved:.0f}/s achieved); rpc errors: {sum(run.errors.values())} "
        f"{run.errors or ''}; views matched: {len(lat)}; unmatched: {run.unmatched}"
    )
    what = "PostTransaction response" if via == "services" else "produce ack"
    if lat:
        print(
            f"[{run.label}] {what} -> view published: p50 {statistics.median(lat):.1f} ms, p90 {pct(lat, 90):.1f} ms, "
            f"p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms  (target p99 <= 250 ms)"
        )
    if run.stages:
        parts = []
        for i, name in enumerate(STAGES):
            values = [s[i] for s in run.stages]
            parts.append(f"{name} p50 {statistics.median(values):.1f} / p99 {pct(values, 99):.1f}")
        slowest = sorted(run.stages, key=sum)[-max(1, len(run.stages) // 100) :]  # the slowest 1 %
        mean = [statistics.fmean(s[i] for s in slowest) for i in range(len(STAGES))]
        print(f"[{run.label}] stages (ms): " + "; ".join(parts)
              + " | slowest 1 %: " + ", ".join(f"{n} {m:.0f}" for n, m in zip(STAGES, mean, strict=True)))  # fmt: skip
    per = {k: v / max(run.writes, 1) * 1e6 for k, v in run.cpu_s.items()}
    print(
        f"[{run.label}] CPU per write while writing: "
        + ", ".join(f"{k} {v:.0f} µs" for k, v in per.items())
        + f"; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--via", choices=["services", "events"], default="services")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--hub-env", action="append", default=[], help="extra KEY=VALUE for the hub process")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before a change: its hub runs "
                        "in turn with this one's, each on its own fresh namespace and database")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs (each side, with --baseline)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of each warm-up run, left out of the "
                        "figures; they go on until the broker's JIT compilers are quiet (0: none)")  # fmt: skip
    args = parser.parse_args()
    kafka, pg = stack.kafka_for_tests(), stack.postgres_for_tests()
    kafka.start()
    pg.start()
    runs: list[Run] = []
    try:
        for n in range(1, WARMUP_RUNS + 1 if args.warmup else 1):
            warm = await one_run(
                argparse.Namespace(**{**vars(args), "duration": args.warmup}), kafka, pg, f"warm-up {n}", None
            )
            jit = warm.cpu_s["of it JIT"] / warm.seconds
            print(f"[warm-up {n}] {warm.writes} writes, left out; the broker's JIT compilers used {jit:.1%} of a core",
                  flush=True)  # fmt: skip
            if not jit > JIT_QUIET_SHARE:  # (NaN: not our broker, nothing to watch)
                break
        for round_ in range(args.rounds):
            sides: list[tuple[str, Path | None]] = [("this", None)]
            if args.baseline is not None:
                sides.append(("base", args.baseline))
                sides = sides if round_ % 2 == 0 else sides[::-1]
            for label, repo in sides:
                runs.append(await one_run(args, kafka, pg, label, repo))
                report(runs[-1], args.via)
        if len(runs) > 1:
            print("\nmedians over the runs of each side:")
            for label in dict.fromkeys(r.label for r in runs):
                mine = [r for r in runs if r.label == label]
                p99 = statistics.median(pct(r.latencies, 99) for r in mine if r.latencies)
                cpu = {k: statistics.median(r.cpu_s[k] / r.writes * 1e6 for r in mine) for k in mine[0].cpu_s}
                per = ", ".join(f"{k} {v:.0f} µs" for k, v in cpu.items())
                print(f"  {label}: p99 {p99:.1f} ms; CPU per write {per}")
    finally:
        pg.stop()
        kafka.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
