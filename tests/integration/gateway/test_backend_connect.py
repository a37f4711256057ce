"""The gateway's calls wait for a ready backend connection, briefly (ADR 0009).

A backend that stays down is answered with 503 BACKEND_UNAVAILABLE after the connect wait, not
at the request's deadline; a backend back on its port is used within a second; a READY channel
takes the fast path; multi-address targets (round robin) keep serving while one address is down.
Real gRPC servers (the kit's GrpcServer) in this process; the process-level restart test is in
test_backend_restart.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from devtools.stack import free_port
from gateway.backends import BackendNotReady
from services.kit.telemetry import InMemoryTelemetry

from .conftest import FakeBackend, all_services, auth, error_of, gateway_for, settings_for


async def _status(client: Any, path: str = "/v1/customers/c1", method: str = "GET") -> int:
    if method == "GET":
        return (await client.get(path, headers=auth())).status_code
    return (await client.post(path, json={}, headers=auth())).status_code


async def test_a_backend_that_stays_down_is_503_after_the_connect_wait_not_the_deadline(
    telemetry: InMemoryTelemetry,
) -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", default_timeout_s=10.0, gateway_connect_wait_s=0.5)
    async with gateway_for(settings) as (_, client):
        for method, path in [("GET", "/v1/customers/c1"), ("POST", "/v1/customers/c1:close"), ("GET", "/v1/products")]:
            telemetry.spans.clear()
            started = time.perf_counter()
            r = await client.request(method, path, json={} if method == "POST" else None, headers=auth())
            elapsed = time.perf_counter() - started
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            e = error_of(r)
            assert (e["code"], e["reason"]) == (14, "BACKEND_UNAVAILABLE")
            assert e["metadata"]["backend"] in ("customer", "product")
            assert e["message"] == f"the {e['metadata']['backend']} service is not reachable, retry later"
            assert "127.0.0.1" not in r.text
            # The wait (0.5 s), once per request: a failed wait is not retried, even for a GET.
            assert 0.4 < elapsed < 1.5, elapsed
            client_spans = [s for s in telemetry.spans.get_finished_spans() if s.kind.name == "CLIENT"]
            assert len(client_spans) == 1
            assert client_spans[0].attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_the_connect_wait_never_outlasts_the_requests_deadline(telemetry: InMemoryTelemetry) -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", gateway_connect_wait_s=5.0)
    async with gateway_for(settings) as (_, client):
        started = time.perf_counter()
        r = await client.get("/v1/customers/c1", headers={**auth(), "x-timeout-ms": "300"})
        assert r.status_code == 503 and error_of(r)["reason"] == "BACKEND_UNAVAILABLE"
        assert time.perf_counter() - started < 1.0


async def test_requests_waiting_for_one_backend_share_one_waiter(telemetry: InMemoryTelemetry) -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", gateway_connect_wait_s=0.5)
    async with gateway_for(settings) as (app, client):
        started = time.perf_counter()
        statuses = await asyncio.gather(*(_status(client) for _ in range(20)))
        assert statuses == [503] * 20
        assert time.perf_counter() - started < 2.0
        assert list(app.backends._waiters) == ["customer"]


async def test_without_a_connect_wait_a_down_backend_fails_at_once(telemetry: InMemoryTelemetry) -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", gateway_connect_wait_s=0)
    async with gateway_for(settings) as (app, client):
        await _status(client)  # the first call connects (and fails): the channel is now in back-off
        started = time.perf_counter()
        r = await client.post("/v1/customers/c1:close", json={}, headers=auth())
        assert r.status_code == 503 and error_of(r)["reason"] == "BACKEND_UNAVAILABLE"
        assert time.perf_counter() - started < 0.5
        assert not app.backends._waiters


async def test_a_ready_channel_takes_the_fast_path_with_one_state_check(backend: FakeBackend) -> None:
    assert backend.server is not None
    async with gateway_for(settings_for(f"127.0.0.1:{backend.server.port}")) as (app, client):
        assert await _status(client) == 200  # connected
        channel = app.backends._channels["customer"]
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        checks: list[bool] = []
        real = channel.get_state

        def counted(try_to_connect: bool = False) -> grpc.ChannelConnectivity:
            checks.append(try_to_connect)
            return real(try_to_connect)

        channel.get_state = counted  # type: ignore[method-assign]
        assert await _status(client) == 200
        assert checks == [False]
        assert "customer" not in app.backends._waiters or app.backends._waiters["customer"].done()


async def test_a_backend_back_on_its_port_is_used_within_a_second_of_serving(telemetry: InMemoryTelemetry) -> None:
    fake = FakeBackend(all_services(), port=free_port())
    await fake.start()
    settings = settings_for(f"127.0.0.1:{fake.port}", gateway_connect_wait_s=0.3)
    try:
        async with gateway_for(settings) as (_, client):
            assert await _status(client) == 200
            await fake.stop()
            # Down for 3 s: with gRPC's default back-off the channel would now wait ~2-4 s more.
            down_until = time.perf_counter() + 3.0
            while time.perf_counter() < down_until:
                started = time.perf_counter()
                assert await _status(client) == 503
                assert time.perf_counter() - started < 1.0
                await asyncio.sleep(0.05)
            await fake.start()
            serving = time.perf_counter()
            while await _status(client) != 200:
                assert time.perf_counter() - serving < 1.0, "no 2xx within 1 s of the backend's restart"
                await asyncio.sleep(0.05)
            assert time.perf_counter() - serving < 1.0
    finally:
        await fake.stop()


@pytest.mark.parametrize("down_from_the_start", [True, False])
async def test_a_two_address_target_keeps_serving_when_one_address_is_down(
    telemetry: InMemoryTelemetry, down_from_the_start: bool
) -> None:
    a = FakeBackend(all_services())
    b = FakeBackend(all_services(), port=free_port())
    await a.start()
    if not down_from_the_start:
        await b.start()
    assert a.server is not None
    target = f"ipv4:127.0.0.1:{a.server.port},127.0.0.1:{b.port}"
    try:
        async with gateway_for(settings_for(target, gateway_connect_wait_s=0.5)) as (_, client):
            if not down_from_the_start:
                for _ in range(10):
                    assert await _status(client) == 200
                assert a.calls and b.calls  # round robin over both
                await b.stop()
                await asyncio.sleep(0.2)  # let the channel see b's connection go away
            a.calls.clear()
            started = time.perf_counter()
            for _ in range(10):
                assert await _status(client) == 200
                assert await _status(client, "/v1/customers/c1:close", "POST") == 200
            assert len(a.calls) == 20  # every call on the live address
            assert time.perf_counter() - started < 5.0
            # And the other address rejoins the rotation once it is back.
            await b.start()
            b.calls.clear()
            back = time.perf_counter()
            while not b.calls:
                assert await _status(client) == 200
                assert time.perf_counter() - back < 2.0, "the restarted address got no call within 2 s"
                await asyncio.sleep(0.02)
    finally:
        await a.stop()
        await b.stop()


async def test_a_dns_target_is_served(backend: FakeBackend) -> None:
    assert backend.server is not None
    async with gateway_for(settings_for(f"dns:///localhost:{backend.server.port}")) as (_, client):
        assert await _status(client) == 200


def test_backend_not_ready_is_an_unavailable_rpc_error_with_a_rich_status() -> None:
    from gateway.errors import status_from_rpc_error

    error = BackendNotReady("datahub")
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    status = status_from_rpc_error(error)
    assert status.code == 14 and status.message == "the datahub service is not reachable, retry later"
    assert [d.type_url.rsplit(".", 1)[1] for d in status.details] == ["ErrorInfo"]
