"""Benchmark: what the product → customer lookup costs against gRPC's own floor (not a test).

    .venv/bin/python -m bench.lookup_floor [--calls 1600] [--concurrency 16] [--rounds 3]

Starts Kafka, PostgreSQL, the three services and the ceiling cells as ``bench/services.py`` does,
then calls, from this one process, in turn and at the same concurrency (so at about the same
rate, where a gRPC call's per-call cost depends on how many calls share a wake-up):

- cell ``A`` (bare grpc.aio, answer from memory) and ``C-read`` (bare grpc.aio + one asyncpg
  SELECT) — the floors;
- the customer service's ``GetEligibilityProfile`` with a token and a ``traceparent`` through a
  bare generated stub, and with the product's own token through the product's own client
  (:class:`services.product.customers.CustomerDirectory`, the kit's ``ServiceClient``);
- the customer service's ``GetCustomer`` (masked), for comparison.

Prints per target the CPU µs per call of this process (the client) and of the serving process
(/proc), medians over the rounds. The kit's per-call share is ``bench/kit_call.py``'s.
Findings: docs/perf/services.md ("Wave 7 — reads and the customer lookup").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from bench.services import Platform, seed
from devtools.stack import KafkaServer, PostgresServer
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from services.kit.grpc_server import CLIENT_OPTIONS
from services.kit.service_auth import service_token_provider
from services.product.customers import CustomerDirectory
from tests.support.procs import cpu_seconds

TRACEPARENT = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


async def _per_call(call: Callable[[], Awaitable[Any]], pid: int, calls: int, concurrency: int) -> tuple[float, float]:
    """(client, server) CPU µs per call of ``calls`` calls, ``concurrency`` at a time."""
    await call()
    server, client = cpu_seconds(pid), time.process_time()
    for _ in range(calls // concurrency):
        await asyncio.gather(*(call() for _ in range(concurrency)))
    n = calls // concurrency * concurrency
    return (time.process_time() - client) / n * 1e6, (cpu_seconds(pid) - server) / n * 1e6


async def measure(platform: Platform, ids: dict[str, Any], token: str, args: argparse.Namespace) -> None:
    auth = (("authorization", f"Bearer {token}"),)
    pids, targets = platform.pids(), platform.targets
    customer_id = ids["customers"][-1]
    lookup = customer_pb2.GetEligibilityProfileRequest(customer_id=customer_id)
    channels = {name: grpc.aio.insecure_channel(targets[name], options=CLIENT_OPTIONS) for name in targets}
    stub = {name: customer_pb2_grpc.CustomerServiceStub(ch) for name, ch in channels.items()}
    # (the product's own token, from the provider the product service uses in dev)
    tokens = service_token_provider(
        environment="dev", client_id="zhongtai-product", scopes=["customers:read"], hs256_secret=DEV_SECRET,
        token_file=None, issuer="zhongtai-dev", audience="zhongtai",
    )  # fmt: skip
    directory = CustomerDirectory(targets["customer"], tokens, deadline_s=5.0)
    await directory.start()
    cases: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("A: bare grpc.aio, from memory", "A",
         lambda: stub["A"].GetCustomer(customer_pb2.GetCustomerRequest(customer_id="cell-1"), metadata=auth)),
        ("C-read: bare grpc.aio + asyncpg", "C-read",
         lambda: stub["C-read"].GetCustomer(customer_pb2.GetCustomerRequest(customer_id="cell-1"), metadata=auth)),
        ("GetEligibilityProfile, bare stub", "customer",
         lambda: stub["customer"].GetEligibilityProfile(lookup, metadata=(*auth, TRACEPARENT), timeout=5)),
        ("GetEligibilityProfile, CustomerDirectory", "customer",
         lambda: directory.profile(customer_id, time_remaining=5.0)),
        ("GetCustomer (masked)", "customer",
         lambda: stub["customer"].GetCustomer(customer_pb2.GetCustomerRequest(customer_id=customer_id), metadata=auth)),
    ]  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    try:
        for round_ in range(args.rounds):
            for name, process, call in cases:
                client, server = await _per_call(call, pids[process], args.calls, args.concurrency)
                results[name].append((client, server))
                print(f"[{round_ + 1}] {name:42s} client {client:6.0f}  {process} {server:6.0f} µs/call", flush=True)
    finally:
        await directory.stop()
        for ch in channels.values():
            await ch.close()
    print(f"\nmedians over {args.rounds} rounds, {args.calls} calls each, {args.concurrency} at a time")
    for name, process, _ in cases:
        client = statistics.median(r[0] for r in results[name])
        server = statistics.median(r[1] for r in results[name])
        print(f"  {name:42s} client {client:6.0f}  {process} {server:6.0f} µs/call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    token = mint_token(DEV_SECRET, [s for s in ALL_SCOPES if s != "pii:read"], client_id="bench", ttl_s=7200)
    with KafkaServer() as kafka, PostgresServer() as pg:
        platform = Platform(kafka, pg, Path(tempfile.mkdtemp(prefix="zt-bench-lookup-")), [])
        try:
            platform.start(statements=False)
            ids = asyncio.run(seed(platform, (("authorization", f"Bearer {token}"),), 40))
            asyncio.run(measure(platform, ids, token, args))
        finally:
            platform.stop()


if __name__ == "__main__":
    main()
