"""A view miss is explained by the system of record (ADR 0008): not built yet, no such
customer, or "cannot tell" — never a bare 404 for a customer that exists."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.data_hub.api import VIEW_RETRY_AFTER_S, view_miss
from services.data_hub.customers import KnownCustomers
from services.kit.errors import NotFound, Unavailable, to_rpc_status
from services.kit.service_auth import DevTokenSigner

SECRET = "unit-test-secret-0123456789-abcdefghij"


class Directory:
    """What the customer service would answer: exists / not / cannot say."""

    def __init__(self, answer: bool | Unavailable) -> None:
        self.answer = answer
        self.asked: list[tuple[str, float | None]] = []

    async def exists(self, customer_id: str, *, time_remaining: float | None = None) -> bool:
        self.asked.append((customer_id, time_remaining))
        if isinstance(self.answer, Unavailable):
            raise self.answer
        return self.answer


def _reason(error: Exception) -> str:
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in to_rpc_status(error).details)  # type: ignore[arg-type]
    return info.reason


async def test_a_known_customer_without_a_view_is_unavailable_view_not_built_with_retry_info() -> None:
    directory = Directory(True)
    error = await view_miss("C-1", directory, time_remaining=4.0)
    assert isinstance(error, Unavailable) and error.reason == "VIEW_NOT_BUILT"
    assert error.metadata == {"customer_id": "C-1"} and "being built" in error.message
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in to_rpc_status(error).details)
    assert retry.retry_delay.ToNanoseconds() == VIEW_RETRY_AFTER_S * 1e9
    assert directory.asked == [("C-1", 4.0)]  # the caller's remaining deadline is passed on


async def test_an_unknown_customer_is_not_found_customer_not_found() -> None:
    error = await view_miss("nobody", Directory(False))
    assert isinstance(error, NotFound) and _reason(error) == "CUSTOMER_NOT_FOUND"
    assert error.metadata == {"customer_id": "nobody"}


@pytest.mark.parametrize("reason", ["CUSTOMER_SERVICE_UNAVAILABLE", "SERVICE_TOKEN_UNAVAILABLE"])
async def test_when_the_customer_service_cannot_say_the_miss_is_unavailable_with_its_reason(reason: str) -> None:
    down = Unavailable("down", reason=reason, metadata={"upstream_code": "UNAVAILABLE"})
    error = await view_miss("C-1", Directory(down))
    assert isinstance(error, Unavailable) and error.reason == reason
    assert error.metadata == {"upstream_code": "UNAVAILABLE", "customer_id": "C-1"}
    assert error.retry_delay_s is None  # nobody knows when it comes back: no promise
    assert "cannot say" in error.message


class FakeCustomers(customer_pb2_grpc.CustomerServiceServicer):
    def __init__(self, known: set[str]) -> None:
        self.known = known

    async def GetEligibilityProfile(self, request, context):  # type: ignore[no-untyped-def]
        if request.customer_id not in self.known:
            await context.abort(grpc.StatusCode.NOT_FOUND, "customer not found")
        return customer_pb2.EligibilityProfile(customer_id=request.customer_id)


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    customer_pb2_grpc.add_CustomerServiceServicer_to_server(FakeCustomers({"C-1"}), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def _tokens() -> DevTokenSigner:
    return DevTokenSigner(secret=SECRET, client_id="zhongtai-data-hub", scopes=["customers:read"])


async def test_known_customers_answers_exists_from_the_customer_service(target: str) -> None:
    customers = KnownCustomers(target, _tokens())
    await customers.start()
    try:
        assert await customers.exists("C-1") is True
        assert await customers.exists("C-2") is False
    finally:
        await customers.stop()


async def test_known_customers_with_nobody_listening_is_unavailable_within_its_deadline() -> None:
    from devtools.stack import free_port

    customers = KnownCustomers(f"127.0.0.1:{free_port()}", _tokens(), deadline_s=0.3)
    await customers.start()
    try:
        with pytest.raises(Unavailable) as info:
            await customers.exists("C-1")
    finally:
        await customers.stop()
    assert info.value.reason == "CUSTOMER_SERVICE_UNAVAILABLE"
