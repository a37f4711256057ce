"""Two gateway replicas share their state (ADR 0022, ADR 0023): Idempotency-Key records in
PostgreSQL, quota buckets in Redis — a replay on the other replica gets the first response, a
different request under the same key is refused on both, and a client's quota is one quota."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bank.customer.v1 import customer_pb2
from devtools import stack as devstack
from tests.integration.gateway.conftest import FakeBackend, auth, error_of, gateway_for, settings_for

GOOD_CUSTOMER = {
    "fullName": "Li Lei",
    "birthDate": {"year": 1990, "month": 5, "day": 17},
    "nationalId": "11010519900517001X",
    "mobile": "13812345678",
}
CREATE = "/bank.customer.v1.CustomerService/CreateCustomer"


@contextlib.asynccontextmanager
async def two_gateways(target: str, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = settings_for(target, **overrides)
    async with gateway_for(settings) as (_a, first), gateway_for(settings) as (_b, second):
        yield first, second


@pytest.fixture
async def shared(backend: FakeBackend, pg_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    backend.calls.clear()
    backend.handlers.clear()
    assert backend.server is not None
    target = f"127.0.0.1:{backend.server.port}"
    async with two_gateways(target, idempotency_store="database", database_url=pg_url) as clients:
        yield clients


async def test_a_replay_on_the_other_replica_gets_the_first_response(
    backend: FakeBackend, shared: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    async def create(request: Any, context: Any) -> Any:
        return customer_pb2.Customer(customer_id=f"c-{len(backend.calls_to('CreateCustomer'))}")

    backend.handlers[CREATE] = create
    first, second = shared
    headers = {**auth(client_id="app-1"), "idempotency-key": f"key-{uuid.uuid4().hex}"}
    one = await first.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    two = await second.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json() == {**one.json(), "customerId": "c-1"}
    assert two.headers["idempotent-replayed"] == "true"
    assert len(backend.calls_to("CreateCustomer")) == 1


async def test_another_request_under_the_same_key_is_refused_on_every_replica(
    backend: FakeBackend, shared: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    first, second = shared
    headers = {**auth(client_id="app-1"), "idempotency-key": f"key-{uuid.uuid4().hex}"}
    assert (await first.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)).status_code == 200
    other = {**GOOD_CUSTOMER, "fullName": "Wang Wu"}
    for client in (first, second):
        refused = await client.post("/v1/customers", json=other, headers=headers)
        assert refused.status_code == 409 and error_of(refused)["reason"] == "IDEMPOTENCY_KEY_REUSED"


async def test_concurrent_duplicates_on_two_replicas_call_the_service_once(
    backend: FakeBackend, shared: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    async def create(request: Any, context: Any) -> Any:
        await asyncio.sleep(0.2)
        return customer_pb2.Customer(customer_id="c-once")

    backend.handlers[CREATE] = create
    first, second = shared
    headers = {**auth(client_id="app-1"), "idempotency-key": f"key-{uuid.uuid4().hex}"}
    results = await asyncio.gather(
        *(c.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers) for c in (first, second, first, second))
    )
    assert [r.status_code for r in results] == [200] * 4
    assert {r.json()["customerId"] for r in results} == {"c-once"}
    assert len(backend.calls_to("CreateCustomer")) == 1


async def test_a_failed_first_attempt_frees_the_key_on_every_replica(
    backend: FakeBackend, shared: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    from services.kit.errors import Unavailable

    attempts: list[int] = []

    async def flaky(request: Any, context: Any) -> Any:
        attempts.append(1)
        if len(attempts) <= 3:  # the first request's attempts (the gateway retries UNAVAILABLE 3 times)
            raise Unavailable("down for a moment")
        return customer_pb2.Customer(customer_id="c-second-try")

    backend.handlers[CREATE] = flaky
    first, second = shared
    headers = {**auth(client_id="app-1"), "idempotency-key": f"key-{uuid.uuid4().hex}"}
    assert (await first.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)).status_code == 503
    retried = await second.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    assert retried.status_code == 200 and retried.json()["customerId"] == "c-second-try"


async def test_a_client_s_quota_is_shared_by_both_replicas(backend: FakeBackend, redis_server: Any) -> None:
    assert backend.server is not None
    target = f"127.0.0.1:{backend.server.port}"
    limits = {"quota_reads_rps": 0.5, "quota_reads_burst": 10, "quota_redis_url": redis_server.url}
    async with two_gateways(target, **limits) as (first, second):
        headers = auth(client_id=f"quota-{uuid.uuid4().hex[:8]}")
        statuses = [
            (await (first if i % 2 else second).get("/v1/customers/c-1", headers=headers)).status_code
            for i in range(16)
        ]
    # One bucket of 10 for the client across both replicas (per-replica buckets would allow 16).
    assert statuses.count(200) == 10 and statuses.count(429) == 6, statuses


async def test_quotas_fall_back_to_each_replica_when_redis_is_down(backend: FakeBackend) -> None:
    assert backend.server is not None
    target = f"127.0.0.1:{backend.server.port}"
    nowhere = f"redis://127.0.0.1:{devstack.free_port()}/0"
    limits = {"quota_reads_rps": 0.5, "quota_reads_burst": 3, "quota_redis_url": nowhere}
    async with two_gateways(target, **limits) as (first, second):
        headers = auth(client_id="quota-fallback")
        statuses = [(await first.get("/v1/customers/c-1", headers=headers)).status_code for _ in range(5)]
        statuses += [(await second.get("/v1/customers/c-1", headers=headers)).status_code for _ in range(5)]
    # Never a 5xx: each replica enforces its own bucket of 3 meanwhile.
    assert statuses == [200] * 3 + [429] * 2 + [200] * 3 + [429] * 2, statuses
