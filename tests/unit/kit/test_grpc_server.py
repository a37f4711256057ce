"""services.kit.grpc_server: an in-process GrpcServer (127.0.0.1, port 0) serving a tiny CustomerService.

The servicer implements only ``GetCustomer`` of the real contract, so the interceptor reads the
contract's scopes (``customers:read``) and protovalidate rules (``customer_id`` pattern).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError, IntegrityError

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.kit.auth import TokenVerifier, current_principal, mint_token
from services.kit.errors import ERROR_DOMAIN, NotFound
from services.kit.grpc_server import GrpcServer, client_channel, traced
from services.kit.telemetry import install_in_memory

SECRET = "unit-test-secret-0123456789-abcdefghij"
SERVICE = "bank.customer.v1.CustomerService"


def _retried_conflict_then_lost() -> BaseException:
    """An IntegrityError retry path (a use case re-reads after losing a race) whose re-read then
    finds the connection gone: the error raised is the connection's, with the conflict as context."""
    try:
        raise IntegrityError("INSERT INTO t", {"p": "hunter2"}, Exception("duplicate key value"))
    except IntegrityError:
        try:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        except Exception as lost:
            return DBAPIError("SELECT 1", None, lost)


#: What a handler sees of a database that is down, by customer id (as asyncpg / SQLAlchemy raise it).
DB_DOWN: dict[str, Callable[[], BaseException]] = {
    # the pool's new connection: the server is stopped
    "db-refused": lambda: ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)"),
    # the server is starting up / in recovery / a standby without hot standby
    "db-starting": lambda: asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    # ALTER DATABASE ... ALLOW_CONNECTIONS false
    "db-refusing": lambda: asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
        'database "customer" is not currently accepting connections'
    ),
    "db-retried": _retried_conflict_then_lost,
}


class TinyCustomers(customer_pb2_grpc.CustomerServiceServicer):
    """GetCustomer: 'missing' → NotFound, 'crash' → an unexpected error, 'db-lost' → the database
    connection broke under the call, other 'db-*' ids → the database failures of :data:`DB_DOWN`
    ('db-conflict': a constraint violation), else a customer."""

    async def GetCustomer(
        self, request: customer_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> customer_pb2.Customer:
        if request.customer_id == "missing":
            raise NotFound("customer missing does not exist", reason="CUSTOMER_NOT_FOUND", metadata={"id": "missing"})
        if request.customer_id == "crash":
            raise RuntimeError("connection to db at 10.0.0.7 with password hunter2 failed")
        if request.customer_id == "db-lost":
            gone = ConnectionResetError("connection to 10.0.0.7 reset")
            raise DBAPIError("SELECT secret FROM t", {"p": "hunter2"}, gone, connection_invalidated=True)
        if request.customer_id in DB_DOWN:
            raise DB_DOWN[request.customer_id]()
        if request.customer_id == "db-conflict":
            raise IntegrityError("INSERT INTO t", {"p": "hunter2"}, Exception("duplicate key value"))
        principal = current_principal.get()
        return customer_pb2.Customer(
            customer_id=request.customer_id, full_name=principal.client_id if principal else "<none>"
        )


def verifier() -> TokenVerifier:
    return TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=SECRET)


def auth(*scopes: str, client_id: str = "unit-client") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {mint_token(SECRET, scopes, client_id=client_id)}")]


def new_server(port: int = 0) -> GrpcServer:
    return GrpcServer(
        host="127.0.0.1",
        port=port,
        register=lambda s: customer_pb2_grpc.add_CustomerServiceServicer_to_server(TinyCustomers(), s),  # type: ignore[abstract]
        service_names=[SERVICE],
        verifier=verifier(),
        shutdown_grace_s=0.5,
    )


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = new_server()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    ch = client_channel(f"127.0.0.1:{server.port}")
    try:
        yield ch
    finally:
        await ch.close()


async def get(
    channel: grpc.aio.Channel, customer_id: str, metadata: list[tuple[str, str]] | None
) -> customer_pb2.Customer:
    stub = customer_pb2_grpc.CustomerServiceStub(channel)
    return await stub.GetCustomer(
        customer_pb2.GetCustomerRequest(customer_id=customer_id), metadata=metadata, timeout=5
    )


async def failed_call(
    channel: grpc.aio.Channel, customer_id: str, metadata: list[tuple[str, str]] | None
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(channel, customer_id, metadata)
    return info.value


def details(error: grpc.aio.AioRpcError) -> tuple[status_pb2.Status | None, list[object]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    unpacked: list[object] = []
    for detail in status.details if status is not None else []:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            msg = kind()
            if detail.Unpack(msg):
                unpacked.append(msg)
    return status, unpacked


# --- the interceptor ----------------------------------------------------------------------------


async def test_an_authorized_valid_call_reaches_the_handler_with_the_principal(channel: grpc.aio.Channel) -> None:
    customer = await get(channel, "c-1", auth("customers:read", client_id="teller-app"))
    assert customer == customer_pb2.Customer(customer_id="c-1", full_name="teller-app")


async def test_a_call_without_a_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "c-1", None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    _, found = details(error)
    assert [d.reason for d in found if isinstance(d, error_details_pb2.ErrorInfo)] == ["MISSING_TOKEN"]


async def test_a_token_signed_with_another_secret_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    forged = mint_token("another-secret-0123456789-abcdefghijkl", ["customers:read"])
    error = await failed_call(channel, "c-1", [("authorization", f"Bearer {forged}")])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_without_the_contract_scope_is_denied_naming_the_scope(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "c-1", auth("customers:write", "pii:read"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "customers:read" in (error.details() or "")
    _, found = details(error)
    (info,) = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "MISSING_SCOPE"
    assert info.metadata["missing_scopes"] == "customers:read"


async def test_an_invalid_request_is_invalid_argument_with_field_violations(channel: grpc.aio.Channel) -> None:
    # GetCustomerRequest.customer_id: pattern ^[A-Za-z0-9][A-Za-z0-9_-]*$ (no leading '-', no spaces)
    error = await failed_call(channel, "-not an id", auth("customers:read"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, found = details(error)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    (bad,) = [d for d in found if isinstance(d, error_details_pb2.BadRequest)]
    assert [v.field for v in bad.field_violations] == ["customer_id"]
    assert "match" in bad.field_violations[0].description
    (info,) = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "INVALID_FIELDS"


async def test_authentication_is_checked_before_validation(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "-not an id", None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_kit_not_found_becomes_not_found_with_error_info(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "missing", auth("customers:read"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "customer missing does not exist"
    _, found = details(error)
    (info,) = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, info.domain, dict(info.metadata)) == ("CUSTOMER_NOT_FOUND", ERROR_DOMAIN, {"id": "missing"})


async def test_an_unexpected_exception_is_a_bare_internal_error(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "crash", auth("customers:read"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    status, _ = details(error)
    assert status is None or not status.details
    trailers = str(error.trailing_metadata() or "")
    assert "hunter2" not in trailers and "10.0.0.7" not in trailers


async def test_a_lost_database_connection_is_unavailable_so_callers_retry(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "db-lost", auth("customers:read"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    _, found = details(error)
    (info,) = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "DATABASE_UNAVAILABLE"
    said = f"{error.details()} {error.trailing_metadata()}"
    assert "hunter2" not in said and "10.0.0.7" not in said and "SELECT" not in said


@pytest.mark.parametrize("customer_id", sorted(DB_DOWN))
async def test_every_kind_of_database_outage_is_unavailable_with_reason_database_unavailable(
    channel: grpc.aio.Channel, customer_id: str
) -> None:
    error = await failed_call(channel, customer_id, auth("customers:read"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    _, found = details(error)
    (info,) = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == "DATABASE_UNAVAILABLE"
    said = f"{error.details()} {error.trailing_metadata()}"
    assert "hunter2" not in said and "10.0.0.7" not in said


async def test_a_constraint_violation_that_escapes_a_use_case_stays_internal(channel: grpc.aio.Channel) -> None:
    error = await failed_call(channel, "db-conflict", auth("customers:read"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"


# --- health, reflection, binding, shutdown ------------------------------------------------------


async def test_health_reports_serving_for_the_server_and_each_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_is_open_without_a_token(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=None, timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_turns_not_serving_once_stop_begins() -> None:
    srv = new_server()
    await srv.start()
    health = srv._health  # the servicer itself: once stop() began the server refuses new calls
    assert health is not None
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    assert (await health.Check(request, None)).status == health_pb2.HealthCheckResponse.SERVING  # type: ignore[arg-type]
    await srv.stop()
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), None)  # type: ignore[arg-type]
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_watch_streams_the_serving_status(channel: grpc.aio.Channel) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    try:
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        watch.cancel()


async def test_reflection_lists_the_service_and_health(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names: set[str] = set()
    async for reply in call:
        names |= {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_business_rpcs_are_traced_and_health_and_reflection_are_not(channel: grpc.aio.Channel) -> None:
    memory = install_in_memory()
    memory.spans.clear()
    await get(channel, "c-traced", auth("customers:read"))
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    names = [s.name for s in memory.spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert f"/{SERVICE}/GetCustomer" in names
    assert not [n for n in names if "grpc.health" in n or "grpc.reflection" in n], names


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/bank.customer.v1.CustomerService/GetCustomer", True),
        (b"/bank.product.v1.ProductService/PostTransaction", True),
        ("/grpc.health.v1.Health/Check", False),
        ("/grpc.health.v1.Health/Watch", False),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", False),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", False),
    ],
)
def test_the_trace_filter_skips_only_health_and_reflection(method: str | bytes, expected: bool) -> None:
    class Details:
        pass

    details = Details()
    details.method = method  # type: ignore[attr-defined]
    assert traced(details) is expected  # type: ignore[arg-type]


async def test_the_server_binds_an_ephemeral_port(server: GrpcServer) -> None:
    assert server.port > 0


async def test_a_second_server_on_the_same_port_fails_to_bind(server: GrpcServer) -> None:
    clash = new_server(port=server.port)
    with pytest.raises(RuntimeError):
        await clash.start()
    await clash.stop()  # nothing was started: a no-op


async def test_stop_twice_and_stop_before_start_are_safe() -> None:
    srv = new_server()
    await srv.stop()  # before start
    await srv.start()
    await srv.stop()
    await srv.stop()
    ch = client_channel(f"127.0.0.1:{srv.port}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        await ch.close()


def test_the_database_unavailable_warning_names_the_drivers_error_without_the_statement_or_its_parameters() -> None:
    from services.kit.grpc_server import _db_error_fields

    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    wrapped = DBAPIError("SELECT secret FROM t WHERE p = $1", {"p": "hunter2"}, starting)
    fields = _db_error_fields(wrapped)
    assert fields == {
        "error": "CannotConnectNowError",
        "sqlstate": "57P03",
        "detail": "the database system is starting up",
    }
    assert "hunter2" not in str(fields) and "SELECT" not in str(fields)


async def test_without_a_span_exporter_calls_carry_the_trace_without_client_interceptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from services.kit import telemetry

    seen: list[dict[str, str]] = []

    async def answer(request: customer_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext) -> object:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        return customer_pb2.Customer(customer_id=request.customer_id)

    bare = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        answer,
        request_deserializer=customer_pb2.GetCustomerRequest.FromString,
        response_serializer=customer_pb2.Customer.SerializeToString,
    )
    bare.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"GetCustomer": handler}),))
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    monkeypatch.setitem(telemetry._read, "spans", False)
    try:
        async with client_channel(f"127.0.0.1:{port}") as ch:
            stub = customer_pb2_grpc.CustomerServiceStub(ch)
            span = telemetry.id_only_span(None)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                await stub.GetCustomer(customer_pb2.GetCustomerRequest(customer_id="c1"), metadata=auth(), timeout=5)
            finally:
                otel_context.detach(token)
            await stub.GetCustomer(customer_pb2.GetCustomerRequest(customer_id="c2"), timeout=5)  # (no trace)
    finally:
        await bare.stop(None)
    ids = span.get_span_context()
    assert seen[0]["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"
    assert seen[0]["authorization"].startswith("Bearer ")
    assert "traceparent" not in seen[1]
