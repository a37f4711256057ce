"""Each kind of PostgreSQL outage, on a real cluster, at the gRPC level of the real customer and
product services: every read and write answers UNAVAILABLE with reason DATABASE_UNAVAILABLE
(never INTERNAL) while it lasts, and the first call once the database is back succeeds.

- **stopped**: ``pg_ctl stop -m immediate`` — the pooled connections die under the services and
  new ones are refused;
- **refusing**: ``ALTER DATABASE … ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` of the
  services' sessions — SQLSTATE 55000 on connect (and 57P01 / a closed connection on the
  terminated ones);
- **starting up**: the cluster restarted as a standby with ``hot_standby = off`` — every
  connection is answered with SQLSTATE 57P03 — until ``pg_ctl promote``.

Writes carry a request_id and are retried with it after the outage: each exists exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from bank.product.v1 import product_pb2, product_pb2_grpc
from devtools import stack
from tests.integration.product.support import product_request
from tests.support.procs import ServiceProcess

from .conftest import (
    METADATA,
    Failure,
    customer_message,
    internal_logs,
    log_dir,
    outcome,
    service_env,
    unavailable_logs,
)

pytestmark = pytest.mark.timeout(240)

DOWN = Failure(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
DATABASES = ("customer", "product")


@dataclass
class Services:
    pg: stack.PostgresServer
    customer: ServiceProcess
    product: ServiceProcess


@pytest.fixture
def services(own_pg: stack.PostgresServer, kafka_server: stack.KafkaLike, tmp_path: Path) -> Iterator[Services]:
    kafka = kafka_server.bootstrap_servers
    urls = {name: own_pg.create_database(name) for name in DATABASES}
    logs = log_dir(tmp_path)
    started: list[ServiceProcess] = []
    try:
        # No outbox relays: polling the pool, they would meet the dead connections before the
        # RPCs do, and the calls under test would only ever see refusals.
        quiet = {"ZT_OUTBOX_RELAY_ENABLED": "false"}
        customer = ServiceProcess("customer", env=service_env(kafka, urls["customer"], **quiet), log_dir=logs)
        started.append(customer.start(120))
        product_env = service_env(kafka, urls["product"], ZT_CUSTOMER_TARGET=customer.target, **quiet)
        product = ServiceProcess("product", env=product_env, log_dir=logs)
        started.append(product.start(120))
        yield Services(own_pg, customer, product)
    finally:
        for proc in reversed(started):
            proc.stop()


@dataclass
class Calls:
    """One read and one write per service; each write keeps its request_id across retries."""

    customers: customer_pb2_grpc.CustomerServiceStub
    products: product_pb2_grpc.ProductServiceStub
    customer_id: str
    product_id: str
    new_customer: customer_pb2.CreateCustomerRequest = field(init=False)
    new_product: product_pb2.CreateProductRequest = field(init=False)
    written: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.new_customer = customer_pb2.CreateCustomerRequest(
            customer=customer_message(), request_id=f"req-{uuid.uuid4().hex}"
        )
        self.new_product = product_request(request_id=f"req-{uuid.uuid4().hex}")

    def all(self) -> dict[str, Callable[[], Awaitable[Failure | None]]]:
        return {
            "GetCustomer": lambda: outcome(
                self.customers.GetCustomer(
                    customer_pb2.GetCustomerRequest(customer_id=self.customer_id), metadata=METADATA, timeout=10
                )
            ),
            "CreateCustomer": lambda: outcome(self._write("CreateCustomer", self.new_customer)),
            "GetProduct": lambda: outcome(
                self.products.GetProduct(
                    product_pb2.GetProductRequest(product_id=self.product_id), metadata=METADATA, timeout=10
                )
            ),
            "CreateProduct": lambda: outcome(self._write("CreateProduct", self.new_product)),
        }

    async def _write(self, name: str, request: Any) -> None:
        stub = self.customers if name == "CreateCustomer" else self.products
        self.written[name] = await getattr(stub, name)(request, metadata=METADATA, timeout=10)


@pytest.fixture
async def calls(services: Services) -> AsyncIterator[Calls]:
    async with (
        grpc.aio.insecure_channel(services.customer.target) as customer_channel,
        grpc.aio.insecure_channel(services.product.target) as product_channel,
    ):
        customers = customer_pb2_grpc.CustomerServiceStub(customer_channel)
        products = product_pb2_grpc.ProductServiceStub(product_channel)
        created = await customers.CreateCustomer(
            customer_pb2.CreateCustomerRequest(customer=customer_message()), metadata=METADATA, timeout=10
        )
        product = await products.CreateProduct(product_request(), metadata=METADATA, timeout=10)
        yield Calls(customers, products, created.customer_id, product.product_id)


async def ride_out(
    services: Services,
    calls: Calls,
    break_db: Callable[[], Awaitable[None]],
    restore_db: Callable[[], Awaitable[None]],
    *,
    rounds: int = 3,
) -> dict[str, float]:
    """Every call succeeds, then fails with DOWN in each of ``rounds`` while the database is
    broken, then succeeds at its FIRST attempt once ``restore_db`` returned (the database accepts
    connections again). Returns each call's seconds from that moment to its success."""
    for name, call in calls.all().items():
        assert await call() is None, f"{name} before the outage"
    await break_db()
    for round_ in range(rounds):
        seen = {name: await call() for name, call in calls.all().items()}
        assert seen == dict.fromkeys(seen, DOWN), f"round {round_} of the outage: {seen}"
    await restore_db()
    back = time.monotonic()
    after: dict[str, float] = {}
    for name, call in calls.all().items():
        result = await call()
        assert result is None, f"{name}: the first call after the database came back failed: {result}"
        after[name] = round(time.monotonic() - back, 3)
    # The writes retried with their request_id exist once; retried again, they are replayed.
    customer = calls.written["CreateCustomer"]
    product = calls.written["CreateProduct"]
    again = await calls.customers.CreateCustomer(calls.new_customer, metadata=METADATA, timeout=10)
    assert again.customer_id == customer.customer_id
    again_p = await calls.products.CreateProduct(calls.new_product, metadata=METADATA, timeout=10)
    assert again_p.product_id == product.product_id
    # Nothing became INTERNAL; every failure was logged as the expected warning.
    for proc in (services.customer, services.product):
        assert internal_logs(proc) == [], proc.tail()
        warnings = unavailable_logs(proc)
        assert warnings, f"{proc.component} logged no 'database unavailable' warning"
        assert all(w["level"] == "warning" and "exception" not in w for w in warnings)  # no stack trace
    return after


def errors_seen(proc: ServiceProcess) -> set[tuple[str, str | None]]:
    """(driver error, SQLSTATE) of each 'database unavailable' warning the service logged."""
    return {(line["error"], line.get("sqlstate")) for line in unavailable_logs(proc)}


async def test_postgres_stopped_immediately_is_unavailable_for_reads_and_writes_and_recovers_at_once(
    services: Services, calls: Calls
) -> None:
    pg = services.pg

    async def stop() -> None:
        pg.halt("immediate")  # pg_ctl stop -m immediate: no goodbye to the pooled connections

    after = await ride_out(services, calls, stop, lambda: asyncio.to_thread(pg.resume))
    print(f"\nstopped: seconds from 'accepting' to each call's success: {after}")
    print(
        "errors logged:", {p.component: sorted(errors_seen(p), key=str) for p in (services.customer, services.product)}
    )
    for proc in (services.customer, services.product):
        seen = errors_seen(proc)
        assert ("ConnectionRefusedError", None) in seen, seen  # new connections while it is down
        assert seen - {("ConnectionRefusedError", None)}, seen  # and first the pooled one that died


async def test_database_refusing_connections_is_unavailable_for_reads_and_writes_and_recovers_at_once(
    services: Services, calls: Calls
) -> None:
    pg = services.pg

    async def admin(*statements: str) -> None:
        await stack._pg_execute(stack._asyncpg_dsn(pg.admin_url), *statements)

    async def refuse() -> None:
        await admin(
            *(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false' for name in DATABASES),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN ('customer', 'product')",
        )

    async def allow() -> None:
        for name in DATABASES:
            await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    after = await ride_out(services, calls, refuse, allow)
    print(f"\nrefusing: seconds from 'allowed' to each call's success: {after}")
    print(
        "errors logged:", {p.component: sorted(errors_seen(p), key=str) for p in (services.customer, services.product)}
    )
    for proc in (services.customer, services.product):
        seen = errors_seen(proc)
        assert ("ObjectNotInPrerequisiteStateError", "55000") in seen, seen  # new connections refused
        assert seen - {("ObjectNotInPrerequisiteStateError", "55000")}, seen  # and the terminated session


async def test_postgres_starting_up_as_a_standby_is_unavailable_for_reads_and_writes_and_recovers_once_promoted(
    services: Services, calls: Calls
) -> None:
    pg = services.pg
    after = await ride_out(
        services, calls, lambda: asyncio.to_thread(pg.start_as_standby), lambda: asyncio.to_thread(pg.promote)
    )
    print(f"\nstarting up: seconds from 'promoted' to each call's success: {after}")
    print(
        "errors logged:", {p.component: sorted(errors_seen(p), key=str) for p in (services.customer, services.product)}
    )
    for proc in (services.customer, services.product):
        seen = errors_seen(proc)
        assert ("CannotConnectNowError", "57P03") in seen, seen
