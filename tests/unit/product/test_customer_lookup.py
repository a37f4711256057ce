"""The customer lookup against an in-process fake customer service: deadline, retries, own token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit import telemetry
from services.kit.auth import TokenVerifier
from services.kit.errors import NotFound, Unavailable
from services.kit.service_auth import DevTokenSigner
from services.product.customers import CustomerDirectory

SECRET = "unit-test-secret-0123456789-abcdefghij"


class FakeCustomers(customer_pb2_grpc.CustomerServiceServicer):
    def __init__(self) -> None:
        self.fail_with: list[grpc.StatusCode] = []
        self.delay_s = 0.0
        self.calls = 0
        self.principals: list[object] = []
        self.traceparents: list[str | None] = []

    async def GetEligibilityProfile(self, request, context):
        self.calls += 1
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.traceparents.append(dict(context.invocation_metadata()).get("traceparent"))
        self.principals.append(
            TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET).verify(
                auth.removeprefix("Bearer ")
            )
        )
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)
        if self.fail_with:
            await context.abort(self.fail_with.pop(0), "nope")
        return customer_pb2.EligibilityProfile(
            customer_id=request.customer_id,
            status=customer_pb2.Customer.STATUS_ACTIVE,
            kyc_verified=True,
            age_years=30,
            risk_tolerance=customer_pb2.RISK_TOLERANCE_C3,
        )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeCustomers, str]]:
    servicer = FakeCustomers()
    server = grpc.aio.server()
    customer_pb2_grpc.add_CustomerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


def signer() -> DevTokenSigner:
    return DevTokenSigner(secret=SECRET, client_id="zhongtai-product", scopes=["customers:read"])


async def test_lookup_carries_the_services_own_token(fake: tuple[FakeCustomers, str]) -> None:
    servicer, target = fake
    directory = CustomerDirectory(target, signer(), deadline_s=2)
    await directory.start()
    try:
        profile = await directory.profile("C-1")
    finally:
        await directory.stop()
    assert profile.customer_id == "C-1" and profile.risk_tolerance == 3 and profile.risk_tolerance_expire_time is None
    principal = servicer.principals[0]
    assert principal.client_id == "zhongtai-product" and principal.scopes == {"customers:read"}  # type: ignore[attr-defined]


async def test_without_a_span_exporter_the_lookup_carries_the_trace_as_a_client_span_would(
    fake: tuple[FakeCustomers, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0030: no CLIENT span is recorded, but the callee continues the caller's trace under a
    new span id (the one the span would have had); retries and errors map as with spans."""
    servicer, target = fake
    monkeypatch.setitem(telemetry._read, "spans", False)
    servicer.fail_with = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND]
    directory = CustomerDirectory(target, signer(), deadline_s=2, initial_backoff_s=0.01)
    await directory.start()
    server_span = telemetry.id_only_span(None)
    token = otel_context.attach(trace.set_span_in_context(server_span))
    try:
        with pytest.raises(NotFound):
            await directory.profile("C-1")
    finally:
        otel_context.detach(token)
        await directory.stop()
    ids = server_span.get_span_context()
    assert servicer.calls == 2 and len(set(servicer.traceparents)) == 2  # (a new span id per attempt)
    for traceparent in servicer.traceparents:
        version, trace_id, span_id, flags = (traceparent or "").split("-")
        assert (version, trace_id, flags) == ("00", f"{ids.trace_id:032x}", "01")
        assert span_id != f"{ids.span_id:016x}"


async def test_unavailable_is_retried_within_the_deadline(fake: tuple[FakeCustomers, str]) -> None:
    servicer, target = fake
    servicer.fail_with = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    directory = CustomerDirectory(target, signer(), deadline_s=2)
    await directory.start()
    try:
        assert (await directory.profile("C-1")).customer_id == "C-1"
    finally:
        await directory.stop()
    assert servicer.calls == 3


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL])
async def test_other_errors_are_not_retried_and_become_unavailable(
    fake: tuple[FakeCustomers, str], code: grpc.StatusCode
) -> None:
    servicer, target = fake
    servicer.fail_with = [code, code]
    directory = CustomerDirectory(target, signer(), deadline_s=2)
    await directory.start()
    try:
        with pytest.raises(Unavailable):
            await directory.profile("C-1")
    finally:
        await directory.stop()
    assert servicer.calls == 1


async def test_unknown_customer_is_not_found(fake: tuple[FakeCustomers, str]) -> None:
    servicer, target = fake
    servicer.fail_with = [grpc.StatusCode.NOT_FOUND]
    directory = CustomerDirectory(target, signer(), deadline_s=2)
    await directory.start()
    try:
        with pytest.raises(NotFound):
            await directory.profile("C-1")
    finally:
        await directory.stop()


async def test_a_slow_customer_service_is_unavailable_at_the_deadline(fake: tuple[FakeCustomers, str]) -> None:
    servicer, target = fake
    servicer.delay_s = 1.0
    directory = CustomerDirectory(target, signer(), deadline_s=0.3)
    await directory.start()
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as info:
            await directory.profile("C-1")
    finally:
        await directory.stop()
    assert time.monotonic() - started < 0.6
    assert info.value.metadata["upstream_code"] == "DEADLINE_EXCEEDED"


async def test_the_callers_shorter_deadline_wins(fake: tuple[FakeCustomers, str]) -> None:
    servicer, target = fake
    servicer.delay_s = 1.0
    directory = CustomerDirectory(target, signer(), deadline_s=5)
    await directory.start()
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable):
            await directory.profile("C-1", time_remaining=0.2)
    finally:
        await directory.stop()
    assert time.monotonic() - started < 0.5


async def test_nobody_listening_is_unavailable_within_the_deadline() -> None:
    from devtools.stack import free_port

    directory = CustomerDirectory(f"127.0.0.1:{free_port()}", signer(), deadline_s=0.5)
    await directory.start()
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as info:
            await directory.profile("C-1")
    finally:
        await directory.stop()
    assert time.monotonic() - started < 0.8
    assert info.value.metadata["upstream_code"] == "UNAVAILABLE"
