"""Benchmark: PostTransaction throughput and latency on PostgreSQL, outbox included.

    .venv/bin/python -m bench.product [--concurrency 32] [--duration 20] [--warmup 3] [--accounts 32]

Starts its own Apache Kafka and PostgreSQL (devtools.stack), a customer service and a product
service process (``python -m services.cli ...``, the relay running inside the product process),
opens ``--accounts`` deposit subscriptions, then runs ``--concurrency`` workers that each post
CREDITs in a closed loop for ``--duration`` seconds over one gRPC channel. Every posting commits
its balance update, transaction row, idempotency key and outbox row in one transaction; the relay
publishes to Kafka meanwhile. After the run it waits until the outbox is drained and reports how
long that took. ``--accounts 1`` measures a single hot account (row-lock contention).

Not a test: figures depend on the machine; record them in docs/perf/product.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import grpc
from google.type import date_pb2, money_pb2
from sqlalchemy import func, select

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from bank.product.v1 import product_pb2, product_pb2_grpc
from devtools.stack import KafkaServer, PostgresServer
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from services.kit.db import create_engine
from services.kit.outbox import OutboxRow
from tests.support.procs import ServiceProcess

P = product_pb2.Product
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def national_id(birth: date, seq: int) -> str:
    body = f"110101{birth:%Y%m%d}{seq % 1000:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, WEIGHTS, strict=True)) % 11]


def cny(yuan: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="CNY", units=yuan)


async def setup(product_target: str, customer_target: str, accounts: int, auth: tuple[tuple[str, str], ...]):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(product_target) as pch, grpc.aio.insecure_channel(customer_target) as cch:
        products = product_pb2_grpc.ProductServiceStub(pch)
        customers = customer_pb2_grpc.CustomerServiceStub(cch)
        product = await products.CreateProduct(
            product_pb2.CreateProductRequest(
                product=P(
                    display_name="Bench demand deposit",
                    type=P.TYPE_DEPOSIT,
                    risk_level=1,  # type: ignore[arg-type]
                    terms=P.Terms(currency_code="CNY", min_amount=cny(1), term_months=0, annual_rate_bps=35),
                )
            ),
            metadata=auth,
            timeout=10,
        )
        await products.PublishProduct(
            product_pb2.PublishProductRequest(product_id=product.product_id), metadata=auth, timeout=10
        )
        birth = date(1985, 3, 14)
        subs: list[tuple[str, str]] = []
        for i in range(accounts):
            created = await customers.CreateCustomer(
                customer_pb2.CreateCustomerRequest(
                    customer=customer_pb2.Customer(
                        full_name="压测客户",
                        birth_date=date_pb2.Date(year=birth.year, month=birth.month, day=birth.day),
                        national_id=national_id(birth, i),
                        mobile=f"139{i:08d}",
                    )
                ),
                metadata=auth,
                timeout=10,
            )
            cid = created.customer_id
            await customers.VerifyCustomer(
                customer_pb2.VerifyCustomerRequest(
                    customer_id=cid, outcome=customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
                ),
                metadata=auth,
                timeout=10,
            )
            sub = await products.CreateSubscription(
                product_pb2.CreateSubscriptionRequest(
                    customer_id=cid,
                    subscription=product_pb2.Subscription(product_id=product.product_id, amount=cny(100)),
                ),
                metadata=auth,
                timeout=10,
            )
            subs.append((cid, sub.subscription_id))
        return subs


async def load(
    target: str, subs: list[tuple[str, str]], concurrency: int, warmup: float, duration: float, auth: tuple
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        start = time.monotonic()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(i: int) -> None:
            nonlocal errors
            cid, sid = subs[i % len(subs)]
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    return
                request = product_pb2.PostTransactionRequest(
                    customer_id=cid,
                    subscription_id=sid,
                    transaction=product_pb2.Transaction(
                        direction=product_pb2.Transaction.DIRECTION_CREDIT, amount=cny(1)
                    ),
                    request_id=f"bench-{uuid.uuid4().hex}",
                )
                try:
                    await stub.PostTransaction(request, metadata=auth, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                t1 = time.monotonic()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)

        await asyncio.gather(*[worker(i) for i in range(concurrency)])
    return latencies, errors, duration


async def outbox_drain(db_url: str, timeout_s: float = 120) -> tuple[float, int]:
    engine = create_engine(db_url, pool_size=1)
    started = time.monotonic()
    try:
        while True:
            async with engine.connect() as conn:
                pending = await conn.scalar(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
                )
                total = await conn.scalar(select(func.count()).select_from(OutboxRow))
            if not pending or time.monotonic() - started > timeout_s:
                return time.monotonic() - started, int(total or 0)
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def validation_ms(rounds: int = 50) -> float:
    """CPU cost of the kit's protovalidate check of one PostTransactionRequest (it runs on every call)."""
    from services.kit.validation import validate_request

    request = product_pb2.PostTransactionRequest(
        customer_id="C-1",
        subscription_id="S-1",
        transaction=product_pb2.Transaction(direction=product_pb2.Transaction.DIRECTION_CREDIT, amount=cny(1)),
        request_id=f"bench-{uuid.uuid4().hex}",
    )
    validate_request(request)
    started = time.process_time()
    for _ in range(rounds):
        validate_request(request)
    return (time.process_time() - started) / rounds * 1000


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--accounts", type=int, default=32)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="zt-bench-product-"))
    auth = (("authorization", f"Bearer {mint_token(DEV_SECRET, ALL_SCOPES, client_id='bench', ttl_s=3600)}"),)
    with KafkaServer() as kafka, PostgresServer() as pg:
        product_db = pg.create_database("bench_product")
        key = base64.b64encode(os.urandom(32)).decode()
        customer = ServiceProcess(
            "customer",
            env={
                "ZT_DATABASE_URL": pg.create_database("bench_customer"),
                "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "ZT_PII_KEY": key,
                "ZT_PII_KEY_ID": "bench",
                "ZT_BLIND_INDEX_KEY": base64.b64encode(os.urandom(32)).decode(),
                "ZT_LOG_LEVEL": "WARNING",
            },
            log_dir=log_dir,
        ).start()
        product = ServiceProcess(
            "product",
            env={
                "ZT_DATABASE_URL": product_db,
                "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "ZT_CUSTOMER_TARGET": customer.target,
                "ZT_LOG_LEVEL": "WARNING",  # access logs off: measure the work, not stdout
            },
            log_dir=log_dir,
        ).start()
        try:
            subs = asyncio.run(setup(product.target, customer.target, args.accounts, auth))
            latencies, errors, duration = asyncio.run(
                load(product.target, subs, args.concurrency, args.warmup, args.duration, auth)
            )
            drain_s, outbox_rows = asyncio.run(outbox_drain(product_db))
        finally:
            product.stop()
            customer.stop()
    latencies.sort()
    print(f"PostTransaction on PostgreSQL {pg.version}, Kafka {kafka.version}, outbox + in-process relay")
    print(
        f"  concurrency={args.concurrency} accounts={args.accounts} "
        f"duration={duration:.0f}s (after {args.warmup:.0f}s warm-up)"
    )
    print(f"  requests={len(latencies)} errors={errors}")
    print(f"  throughput={len(latencies) / duration:.0f} req/s")
    print(
        f"  latency p50={pct(latencies, 0.50) * 1000:.1f} ms  p90={pct(latencies, 0.90) * 1000:.1f} ms  "
        f"p99={pct(latencies, 0.99) * 1000:.1f} ms  mean={statistics.fmean(latencies) * 1000:.1f} ms"
    )
    print(f"  outbox rows={outbox_rows}, drained {drain_s:.1f}s after the load stopped")
    print(f"  request validation (protovalidate, in the kit interceptor): {validation_ms():.1f} ms CPU per request")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  logs: {log_dir}")


if __name__ == "__main__":
    main()
