"""Benchmark: CreateCustomer and GetCustomer over gRPC on PostgreSQL (not a test).

Starts its own PostgreSQL and Apache Kafka (devtools.stack: local processes), the customer
service as a real process (``python -m services.cli customer``, relay included), then drives it
from one grpc.aio client with ``--concurrency`` callers, each phase for ``--duration`` seconds:

1. CreateCustomer (unique people; each call = encrypt 5 fields, blind-index lookup, insert,
   outbox row, commit; the relay publishes to Kafka meanwhile)
2. GetCustomer, masked (no ``pii:read``: decrypt + mask, no write)
3. GetCustomer with ``pii:read`` (clear PII: each read appends to the hash-chained audit log)

Prints req/s and p50/p99 latency per phase. Results and the exact command: docs/perf/customer.md.

    .venv/bin/python bench/customer.py [--concurrency 32] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.type import date_pb2  # noqa: E402

from bank.customer.v1 import customer_pb2, customer_pb2_grpc  # noqa: E402
from devtools.stack import KafkaServer, PostgresServer  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.customer.domain import id_check_char  # noqa: E402
from services.kit.auth import mint_token  # noqa: E402
from tests.support.procs import ServiceProcess  # noqa: E402

BASE = date(1960, 1, 1)


def person(n: int) -> customer_pb2.Customer:
    """A unique, valid person for each n < 15,000,000."""
    born = BASE + timedelta(days=n % 15000)
    first17 = f"110101{born:%Y%m%d}{(n // 15000) % 1000:03d}"
    return customer_pb2.Customer(
        full_name="李四",
        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
        national_id=first17 + id_check_char(first17),
        mobile=f"139{n % 100_000_000:08d}",
        email=f"li.{n}@example.com",
    )


async def phase(
    name: str, call: Callable[[int], Awaitable[object]], *, concurrency: int, duration: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            n = next(counter)
            started = time.perf_counter()
            try:
                await call(n)
            except grpc.aio.AioRpcError as exc:
                errors += 1
                if errors <= 3:
                    print(f"  {name}: {exc.code().name} {exc.details()}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


async def drive(target: str, concurrency: int, duration: float) -> list[tuple[str, dict[str, float]]]:
    writer = [("authorization", f"Bearer {mint_token(DEV_SECRET, ['customers:read', 'customers:write'])}")]
    auditor = [
        (
            "authorization",
            f"Bearer {mint_token(DEV_SECRET, ['customers:read', 'pii:read'], client_id='bench-auditor')}",
        )
    ]
    ids: list[str] = []
    offset = random.randrange(1000) * 15000  # a fresh region of the ID space per run

    async with grpc.aio.insecure_channel(target) as channel:
        stub = customer_pb2_grpc.CustomerServiceStub(channel)

        async def create(n: int) -> object:
            reply = await stub.CreateCustomer(
                customer_pb2.CreateCustomerRequest(customer=person(offset + n)), metadata=writer, timeout=10
            )
            ids.append(reply.customer_id)
            return reply

        async def get_masked(n: int) -> object:
            request = customer_pb2.GetCustomerRequest(customer_id=ids[n % len(ids)])
            return await stub.GetCustomer(request, metadata=writer, timeout=10)

        async def get_clear(n: int) -> object:
            request = customer_pb2.GetCustomerRequest(customer_id=ids[(n * 7919) % len(ids)])
            return await stub.GetCustomer(request, metadata=auditor, timeout=10)

        # warm-up: connections, pools, caches (not measured)
        await phase("warm-up", create, concurrency=concurrency, duration=2)
        offset += 10**6
        results = [
            ("CreateCustomer", await phase("create", create, concurrency=concurrency, duration=duration)),
            ("GetCustomer (masked)", await phase("get", get_masked, concurrency=concurrency, duration=duration)),
            (
                "GetCustomer (pii:read, audited)",
                await phase("get-pii", get_clear, concurrency=concurrency, duration=duration),
            ),
        ]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="zt-bench-customer-") as tmp,
        KafkaServer() as kafka,
        PostgresServer() as pg,
    ):
        url = pg.create_database("bench_customer")
        service = ServiceProcess(
            "customer",
            env={"ZT_DATABASE_URL": url, "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers},
            log_dir=Path(tmp),
        )
        service.start()
        try:
            results = asyncio.run(drive(service.target, args.concurrency, args.duration))
        finally:
            service.stop()
        print()
        print(f"customer service, PostgreSQL {pg.version}, Kafka {kafka.version}, {platform.python_implementation()} "
              f"{platform.python_version()}, {os.cpu_count()} CPUs; concurrency {args.concurrency}, "
              f"{args.duration:g}s per phase, one grpc.aio client process")  # fmt: skip
        print(f"{'RPC':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'calls':>7} {'errors':>6}")
        for name, r in results:
            print(f"{name:34} {r['rps']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['requests']:7.0f} "
                  f"{r['errors']:6.0f}")  # fmt: skip
        failed = sum(r["errors"] for _, r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
