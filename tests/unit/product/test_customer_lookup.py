"""The customer lookup against an in-process fake customer service: deadline, retries, own token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

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
        self.batches: list[list[str]] = []
        self.batch_fail_with: list[grpc.StatusCode] = []

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
        return _known(request.customer_id)

    async def BatchGetEligibilityProfiles(self, request, context):
        self.batches.append(list(request.customer_ids))
        self.traceparents.append(dict(context.invocation_metadata()).get("traceparent"))
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)
        if self.batch_fail_with:
            await context.abort(self.batch_fail_with.pop(0), "nope")
        ids = list(request.customer_ids)
        return customer_pb2.BatchGetEligibilityProfilesResponse(
            profiles=[_known(c) for c in ids if not c.startswith("missing")],
            missing_customer_ids=[c for c in ids if c.startswith("missing")],
        )


def _known(customer_id: str) -> customer_pb2.EligibilityProfile:
    return customer_pb2.EligibilityProfile(
        customer_id=customer_id,
        status=customer_pb2.Customer.STATUS_ACTIVE,
        kyc_verified=True,
        age_years=30 + len(customer_id),
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


# -- lookups that wait at the same time go in one call (ADR 0058) --------------------------------


@pytest.fixture
async def one_at_a_time(fake: tuple[FakeCustomers, str]) -> AsyncIterator[tuple[FakeCustomers, CustomerDirectory]]:
    """A directory with one call out at a time, against a fake that answers after 0.1 s."""
    servicer, target = fake
    servicer.delay_s = 0.1
    directory = CustomerDirectory(target, signer(), deadline_s=2, lookups_in_flight=1)
    await directory.start()
    yield servicer, directory
    await directory.stop()


async def call_out(directory: CustomerDirectory, customer_id: str = "C-1") -> asyncio.Future[Any]:
    """A lookup whose call is out (the ones asked next wait for it)."""
    first = asyncio.ensure_future(directory.profile(customer_id))
    await asyncio.sleep(0.03)
    return first


async def test_lookups_waiting_behind_a_call_go_together_each_with_its_own_answer(
    one_at_a_time: tuple[FakeCustomers, CustomerDirectory],
) -> None:
    servicer, directory = one_at_a_time
    first = await call_out(directory)
    waiting = [directory.profile(c) for c in ("C-22", "C-333", "C-22", "missing-1")]
    answers = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert servicer.calls == 1 and servicer.batches == [["C-22", "C-333", "missing-1"]]
    assert [a.customer_id for a in answers[:4]] == ["C-1", "C-22", "C-333", "C-22"]
    assert [a.age_years for a in answers[:4]] == [33, 34, 35, 34]
    assert isinstance(answers[4], NotFound) and answers[4].reason == "CUSTOMER_NOT_FOUND"


async def test_a_single_waiting_lookup_goes_as_a_plain_call(
    one_at_a_time: tuple[FakeCustomers, CustomerDirectory],
) -> None:
    servicer, directory = one_at_a_time
    first = await call_out(directory)
    second = await directory.profile("C-2")
    await first
    assert second.customer_id == "C-2" and servicer.calls == 2 and servicer.batches == []


async def test_a_batch_the_customer_service_cannot_answer_fails_each_lookup_as_unavailable(
    one_at_a_time: tuple[FakeCustomers, CustomerDirectory],
) -> None:
    servicer, directory = one_at_a_time
    servicer.batch_fail_with = [grpc.StatusCode.PERMISSION_DENIED]
    first = await call_out(directory)
    answers = await asyncio.gather(directory.profile("C-2"), directory.profile("C-3"), return_exceptions=True)
    await first
    assert len(servicer.batches) == 1
    for answer in answers:
        assert isinstance(answer, Unavailable) and answer.reason == "CUSTOMER_SERVICE_UNAVAILABLE"
        assert answer.metadata["upstream_code"] == "PERMISSION_DENIED"


async def test_a_waiting_lookup_keeps_its_own_deadline(one_at_a_time: tuple[FakeCustomers, CustomerDirectory]) -> None:
    servicer, directory = one_at_a_time
    servicer.delay_s = 1.0
    started = time.monotonic()
    first = await call_out(directory)
    with pytest.raises(Unavailable) as info:
        await directory.profile("C-2", time_remaining=0.2)
    assert time.monotonic() - started < 0.5
    assert info.value.metadata["upstream_code"] == "DEADLINE_EXCEEDED"
    assert (await first).customer_id == "C-1"
    assert servicer.batches == []  # (the lookup that gave up was not asked for)


async def test_the_batch_call_continues_the_first_waiting_lookups_trace(
    one_at_a_time: tuple[FakeCustomers, CustomerDirectory], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, directory = one_at_a_time
    monkeypatch.setitem(telemetry._read, "spans", False)
    spans = [telemetry.id_only_span(None) for _ in range(2)]

    async def lookup(customer_id: str, span: trace.Span) -> None:
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await directory.profile(customer_id)
        finally:
            otel_context.detach(token)

    first = await call_out(directory)
    await asyncio.gather(lookup("C-2", spans[0]), lookup("C-3", spans[1]))
    await first
    assert len(servicer.batches) == 1 and len(servicer.traceparents) == 2
    assert (servicer.traceparents[1] or "").split("-")[1] == f"{spans[0].get_span_context().trace_id:032x}"
