"""The gateway over HTTP against in-process gRPC backends: routing, every error path, auth,
quotas, deadlines, idempotency, tracing, OpenAPI and health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from openapi_spec_validator import validate

from bank.customer.v1 import customer_pb2
from gateway.openapi import openapi_path
from gateway.routing import discover_routes, load_contracts
from services.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.kit.telemetry import InMemoryTelemetry
from tests.integration.gateway.conftest import (
    SECRET,
    FakeBackend,
    Stack,
    all_services,
    auth,
    error_of,
    gateway_for,
    settings_for,
    token,
)

GOOD_CUSTOMER = {
    "fullName": "Li Lei",
    "birthDate": {"year": 1990, "month": 5, "day": 17},
    "nationalId": "11010519900517001X",
    "mobile": "13812345678",
}


# ------------------------------------------------------------------------------ routing


def _sample_path(route: Any) -> str:
    path = route.template.openapi_path
    for var in route.template.variables:
        desc, fd = route.method.input_type, None
        for name in var.field_path:
            fd = desc.fields_by_name[name]
            desc = fd.message_type
        value = fd.enum_type.values[-1].name if fd is not None and fd.enum_type is not None else "x1"
        path = path.replace("{" + ".".join(var.field_path) + "}", value)
    return path


async def test_every_annotated_rpc_is_reachable_through_its_route(backend: FakeBackend) -> None:
    routes = discover_routes(load_contracts())
    assert backend.server is not None
    unvalidated = FakeBackend(all_services(), validate=False)
    target = await unvalidated.start()
    try:
        async with gateway_for(settings_for(target)) as (_, client):
            for route in routes:
                path = _sample_path(route)
                body = {} if route.body else None
                response = await client.request(route.http_method, path, json=body, headers=auth())
                assert response.status_code == 200, (route.full_method, response.text)
                assert unvalidated.calls[-1].method == route.full_method
    finally:
        await unvalidated.stop()
    assert {c.method for c in unvalidated.calls} == {r.full_method for r in routes}


async def test_path_body_and_query_reach_the_backend_as_one_message(stack: Stack) -> None:
    r = await stack.client.patch(
        "/v1/customers/c-42?updateMask=full_name,mobile",
        json={"fullName": "Han Meimei", "mobile": "13912345678"},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    request = stack.backend.calls_to("UpdateCustomer")[-1].request
    assert request.customer.customer_id == "c-42"
    assert list(request.update_mask.paths) == ["full_name", "mobile"]
    r = await stack.client.get("/v1/customers?pageSize=5&status=STATUS_ACTIVE&kycVerified=true", headers=auth())
    assert r.status_code == 200, r.text
    listed = stack.backend.calls_to("ListCustomers")[-1].request
    assert (listed.page_size, listed.status, listed.kyc_verified) == (5, customer_pb2.Customer.STATUS_ACTIVE, True)


async def test_responses_are_proto3_json(stack: Stack) -> None:
    async def get(request: Any, context: Any) -> Any:
        return customer_pb2.Customer(
            customer_id=request.customer_id, status=customer_pb2.Customer.STATUS_ACTIVE, version=7
        )

    stack.backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = get
    r = await stack.client.get("/v1/customers/c-1", headers=auth())
    assert r.status_code == 200
    body = r.json()
    assert body["customerId"] == "c-1" and body["status"] == "STATUS_ACTIVE" and body["version"] == "7"
    assert body["kycVerified"] is False
    assert r.headers["content-type"] == "application/json"


# ------------------------------------------------------------------------------ error paths


async def test_malformed_json_is_400(stack: Stack) -> None:
    r = await stack.client.post(
        "/v1/customers", content=b'{"fullName": ', headers={**auth(), "content-type": "application/json"}
    )
    assert r.status_code == 400
    e = error_of(r)
    assert (e["code"], e["reason"]) == (3, "MALFORMED_JSON")
    assert stack.backend.calls == []


async def test_wrong_type_is_400_naming_the_field(stack: Stack) -> None:
    r = await stack.client.post("/v1/customers/c1:assessRisk", json={"questionnaireScore": "lots"}, headers=auth())
    assert r.status_code == 400
    assert error_of(r)["fields"] == ["questionnaireScore"]  # JSON names over HTTP (AIP-193)


async def test_unknown_json_field_is_400_naming_the_field(stack: Stack) -> None:
    r = await stack.client.post("/v1/customers", json={**GOOD_CUSTOMER, "nickName": "x"}, headers=auth())
    assert r.status_code == 400
    e = error_of(r)
    assert e["reason"] == "UNKNOWN_FIELD" and e["fields"] == ["customer.nickName"]


async def test_unknown_query_parameter_is_400(stack: Stack) -> None:
    r = await stack.client.get("/v1/customers?colour=red", headers=auth())
    assert r.status_code == 400
    assert error_of(r)["fields"] == ["colour"]


async def test_missing_required_field_is_the_services_invalid_argument_passed_through(stack: Stack) -> None:
    r = await stack.client.post("/v1/customers", json={"fullName": "Li Lei"}, headers=auth())
    assert r.status_code == 400, r.text
    e = error_of(r)
    assert e["code"] == 3 and e["reason"] == "INVALID_FIELDS"
    assert e["fields"] == ["customer.birthDate", "customer.nationalId", "customer.mobile"]  # the fields themselves
    reasons = {v["reason"] for d in r.json()["details"] for v in d.get("fieldViolations", [])}
    assert reasons == {"REQUIRED"}
    assert stack.backend.calls_to("CreateCustomer") == []  # refused by the kit interceptor before the handler


async def test_service_field_violations_and_error_info_pass_through(stack: Stack) -> None:
    async def refuse(request: Any, context: Any) -> Any:
        raise InvalidArgument(
            "national_id: bad check digit",
            reason="BAD_NATIONAL_ID",
            violations=[FieldViolation("customer.national_id", "bad check digit")],
        )

    stack.backend.handlers["/bank.customer.v1.CustomerService/CreateCustomer"] = refuse
    r = await stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=auth())
    assert r.status_code == 400
    e = error_of(r)
    # the service's proto path, in the JSON names of the HTTP surface; no rule id: the error's reason
    assert (e["reason"], e["domain"], e["fields"]) == ("BAD_NATIONAL_ID", "zhongtai.bank", ["customer.nationalId"])
    assert r.json()["details"][1]["fieldViolations"][0]["reason"] == "BAD_NATIONAL_ID"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("customer c1 not found"), 404),
        (FailedPrecondition("customer is not ACTIVE", reason="NOT_ACTIVE"), 400),
    ],
)
async def test_canonical_codes_map_to_http(stack: Stack, error: Exception, status: int) -> None:
    async def fail(request: Any, context: Any) -> Any:
        raise error

    stack.backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = fail
    r = await stack.client.get("/v1/customers/c1", headers=auth())
    assert r.status_code == status
    assert error_of(r)["message"] == str(error)


async def test_internal_errors_are_stripped(stack: Stack) -> None:
    async def crash(request: Any, context: Any) -> Any:
        raise RuntimeError("db password=hunter2 at /srv/app.py line 3")

    stack.backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = crash
    r = await stack.client.get("/v1/customers/c1", headers=auth())
    assert r.status_code == 500
    e = error_of(r)
    assert e["message"] == "internal error" and "hunter2" not in r.text


async def test_oversize_body_is_413(stack: Stack) -> None:
    big = {**GOOD_CUSTOMER, "fullName": "x" * (1024 * 1024 + 10)}
    r = await stack.client.post("/v1/customers", json=big, headers=auth())
    assert r.status_code == 413
    assert error_of(r)["reason"] == "BODY_TOO_LARGE"


async def test_unknown_route_is_404_and_wrong_method_405(stack: Stack) -> None:
    r = await stack.client.get("/v1/nowhere", headers=auth())
    assert r.status_code == 404 and error_of(r)["reason"] == "NO_ROUTE"
    r = await stack.client.delete("/v1/customers/c1", headers=auth())
    assert r.status_code == 405 and r.headers["allow"] == "GET, PATCH"


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "MISSING_TOKEN"),
        ({"authorization": "Bearer not-a-jwt"}, "INVALID_TOKEN"),
        ({"authorization": f"Bearer {token(now=time.time() - 7200, ttl_s=60)}"}, "TOKEN_EXPIRED"),
        ({"authorization": f"Bearer {token(issuer='https://evil.example')}"}, "BAD_ISSUER"),
        ({"authorization": f"Bearer {token(audience='someone-else')}"}, "BAD_AUDIENCE"),
    ],
)
async def test_bad_tokens_are_401_with_a_bearer_challenge(stack: Stack, headers: dict, reason: str) -> None:
    r = await stack.client.get("/v1/customers/c1", headers=headers)
    assert r.status_code == 401
    e = error_of(r)
    assert (e["code"], e["reason"]) == (16, reason)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    if headers:
        assert 'error="invalid_token"' in challenge
    assert stack.backend.calls == []


async def test_token_signed_with_another_key_is_401(stack: Stack) -> None:
    from services.kit.auth import mint_token

    forged = mint_token("another-secret-0123456789-abcdefghijkl", ["customers:read"])
    r = await stack.client.get("/v1/customers/c1", headers={"authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_missing_scope_is_403_naming_it(stack: Stack) -> None:
    r = await stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=auth("customers:read"))
    assert r.status_code == 403
    e = error_of(r)
    assert e["code"] == 7 and "customers:write" in e["message"]
    assert e["metadata"]["missing_scopes"] == "customers:write"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert stack.backend.calls == []


async def test_token_is_forwarded_to_the_service(stack: Stack) -> None:
    headers = auth("customers:read", client_id="app-7")
    r = await stack.client.get("/v1/customers/c1", headers={**headers, "x-request-id": "req-123"})
    assert r.status_code == 200
    call = stack.backend.calls_to("GetCustomer")[-1]
    assert call.metadata["authorization"] == headers["authorization"]
    assert call.metadata["x-request-id"] == "req-123"
    assert r.headers["x-request-id"] == "req-123"


# ------------------------------------------------------------------------------ quotas, deadlines, backends


async def test_quota_exceeded_is_429_with_retry_after(backend: FakeBackend) -> None:
    assert backend.server is not None
    settings = settings_for(f"127.0.0.1:{backend.server.port}", quota_reads_rps=0.5, quota_reads_burst=3)
    async with gateway_for(settings) as (_, client):
        statuses = [
            (await client.get("/v1/customers/c1", headers=auth(client_id="greedy"))).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        r = await client.get("/v1/customers/c1", headers=auth(client_id="greedy"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        e = error_of(r)
        assert (e["code"], e["reason"]) == (8, "QUOTA_EXCEEDED")
        # another client, and another route group of the same client, are not affected
        assert (await client.get("/v1/customers/c1", headers=auth(client_id="polite"))).status_code == 200
        r = await client.post("/v1/customers/c1:close", json={}, headers=auth(client_id="greedy"))
        assert r.status_code == 200


async def test_backend_down_is_503(telemetry: InMemoryTelemetry) -> None:
    from devtools.stack import free_port

    async with gateway_for(settings_for(f"127.0.0.1:{free_port()}")) as (_, client):
        started = time.perf_counter()
        r = await client.get("/v1/customers/c1", headers=auth())
        assert r.status_code == 503
        e = error_of(r)
        assert (e["code"], e["reason"]) == (14, "BACKEND_UNAVAILABLE")
        assert "127.0.0.1" not in r.text
        assert time.perf_counter() - started < 4
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"


async def test_deadline_is_504_and_client_timeout_is_capped(backend: FakeBackend) -> None:
    async def slow(request: Any, context: Any) -> Any:
        await asyncio.sleep(1.0)
        return customer_pb2.Customer()

    backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = slow
    assert backend.server is not None
    settings = settings_for(f"127.0.0.1:{backend.server.port}", default_timeout_s=0.2, max_timeout_s=0.3)
    try:
        async with gateway_for(settings) as (_, client):
            started = time.perf_counter()
            r = await client.get("/v1/customers/c1", headers=auth())
            assert r.status_code == 504 and error_of(r)["code"] == 4
            assert time.perf_counter() - started < 0.9
            started = time.perf_counter()
            r = await client.get("/v1/customers/c1", headers={**auth(), "x-timeout-ms": "60000"})
            assert r.status_code == 504 and time.perf_counter() - started < 0.9  # capped at 0.3 s
            r = await client.get("/v1/customers/c1", headers={**auth(), "grpc-timeout": "50m"})
            assert r.status_code == 504
            r = await client.get("/v1/customers/c1", headers={**auth(), "x-timeout-ms": "soon"})
            assert r.status_code == 400 and error_of(r)["reason"] == "BAD_TIMEOUT"
    finally:
        backend.handlers.clear()


async def test_reads_are_retried_on_unavailable_but_writes_are_not(stack: Stack) -> None:
    import grpc

    failures = {"n": 0}

    async def flaky(request: Any, context: Any) -> Any:
        failures["n"] += 1
        if failures["n"] < 3:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return customer_pb2.Customer(customer_id="c1")

    stack.backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = flaky
    stack.backend.handlers["/bank.customer.v1.CustomerService/CloseCustomer"] = flaky
    r = await stack.client.get("/v1/customers/c1", headers=auth())
    assert r.status_code == 200 and failures["n"] == 3
    failures["n"] = 0
    r = await stack.client.post("/v1/customers/c1:close", json={}, headers=auth())
    assert r.status_code == 503 and failures["n"] == 1


# ------------------------------------------------------------------------------ idempotency


async def test_idempotency_key_replays_the_first_response(stack: Stack) -> None:
    async def create(request: Any, context: Any) -> Any:
        n = len(stack.backend.calls_to("CreateCustomer"))
        return customer_pb2.Customer(customer_id=f"c-{n}", full_name=request.customer.full_name)

    stack.backend.handlers["/bank.customer.v1.CustomerService/CreateCustomer"] = create
    headers = {**auth(client_id="app-1"), "idempotency-key": "key-0001-abcdef"}
    first = await stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    second = await stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and first.json()["customerId"] == "c-1"
    assert second.headers["idempotent-replayed"] == "true"
    calls = stack.backend.calls_to("CreateCustomer")
    assert len(calls) == 1 and calls[0].request.request_id == "key-0001-abcdef"
    # the same key from another client is another key
    other = await stack.client.post(
        "/v1/customers", json=GOOD_CUSTOMER, headers={**auth(client_id="app-2"), "idempotency-key": "key-0001-abcdef"}
    )
    assert other.status_code == 200 and other.json()["customerId"] == "c-2"


async def test_idempotency_key_reused_with_another_body_is_409(stack: Stack) -> None:
    headers = {**auth(), "idempotency-key": "key-0002-abcdef"}
    assert (await stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)).status_code == 200
    r = await stack.client.post("/v1/customers", json={**GOOD_CUSTOMER, "fullName": "Wang Wu"}, headers=headers)
    assert r.status_code == 409
    e = error_of(r)
    assert e["reason"] == "IDEMPOTENCY_KEY_REUSED" and "different request" in e["message"]


async def test_concurrent_duplicates_call_the_service_once(stack: Stack) -> None:
    async def create(request: Any, context: Any) -> Any:
        await asyncio.sleep(0.1)
        return customer_pb2.Customer(customer_id="c-once")

    stack.backend.handlers["/bank.customer.v1.CustomerService/CreateCustomer"] = create
    headers = {**auth(), "idempotency-key": "key-0003-abcdef"}
    results = await asyncio.gather(
        *(stack.client.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers) for _ in range(3))
    )
    assert [r.status_code for r in results] == [200, 200, 200]
    assert len(stack.backend.calls_to("CreateCustomer")) == 1


# ------------------------------------------------------------------------------ telemetry


async def test_trace_continues_from_traceparent_through_the_backend(stack: Stack, telemetry: InMemoryTelemetry) -> None:
    telemetry.spans.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace_id}-00f067aa0ba902b7-01"
    r = await stack.client.get("/v1/customers/c1", headers={**auth(), "traceparent": incoming})
    assert r.status_code == 200
    assert r.headers["traceparent"].startswith(f"00-{trace_id}-")
    await asyncio.sleep(0.05)
    spans = telemetry.spans.get_finished_spans()
    ours = [s for s in spans if format(s.context.trace_id, "032x") == trace_id]
    kinds = {(s.kind.name, s.name) for s in ours}
    assert ("SERVER", "GET /v1/customers/{customer_id}") in kinds  # the gateway's server span
    assert ("CLIENT", "/bank.customer.v1.CustomerService/GetCustomer") in kinds  # its client span
    assert ("SERVER", "/bank.customer.v1.CustomerService/GetCustomer") in kinds  # the backend's server span
    gateway_span = next(s for s in ours if s.name.startswith("GET /v1/"))
    assert gateway_span.parent is not None and format(gateway_span.parent.span_id, "016x") == "00f067aa0ba902b7"
    # The client span (made inline, no interceptor) is the backend span's parent, with rpc.* attributes.
    client = next(s for s in ours if s.kind.name == "CLIENT")
    backend = next(s for s in ours if s.kind.name == "SERVER" and s.name.startswith("/bank."))
    assert client.parent is not None and client.parent.span_id == gateway_span.context.span_id
    assert backend.parent is not None and backend.parent.span_id == client.context.span_id
    assert client.attributes is not None
    assert client.attributes["rpc.system"] == "grpc"
    assert client.attributes["rpc.service"] == "bank.customer.v1.CustomerService"
    assert client.attributes["rpc.method"] == "GetCustomer"
    assert client.attributes["rpc.grpc.status_code"] == 0


async def test_without_traceparent_a_new_trace_is_started_and_returned(stack: Stack) -> None:
    r = await stack.client.get("/v1/customers/c1", headers=auth())
    assert r.headers["traceparent"].startswith("00-") and len(r.headers["x-request-id"]) == 32


async def test_red_metrics_per_route(stack: Stack, telemetry: InMemoryTelemetry) -> None:
    await stack.client.get("/v1/customers/c1", headers=auth())
    data = telemetry.metrics.get_metrics_data()
    routes = set()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "http.server.request.duration":
                    routes |= {p.attributes.get("http.route") for p in metric.data.data_points}
    assert "/v1/customers/{customer_id}" in routes


async def test_access_log_has_no_token_or_pii(backend: FakeBackend) -> None:
    import io
    import logging

    import structlog

    from services.kit.logging import configure_logging

    stream = io.StringIO()
    root_handlers = logging.getLogger().handlers[:]
    configure_logging("gateway-test", "INFO", stream=stream)
    assert backend.server is not None
    try:
        async with gateway_for(settings_for(f"127.0.0.1:{backend.server.port}", access_log=True)) as (_, client):
            headers = auth(client_id="app-log")
            await client.post("/v1/customers", json=GOOD_CUSTOMER, headers=headers)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = root_handlers
    out = stream.getvalue()
    line = next(x for x in out.splitlines() if '"message":"http"' in x)
    assert '"route":"/v1/customers"' in line and '"client_id":"app-log"' in line
    assert headers["authorization"].split()[1] not in out
    assert GOOD_CUSTOMER["nationalId"] not in out and GOOD_CUSTOMER["mobile"] not in out


# ------------------------------------------------------------------------------ OpenAPI, docs, health, CORS


async def test_openapi_document_covers_every_route(stack: Stack) -> None:
    r = await stack.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    for route in stack.app.routes:
        operation = doc["paths"][openapi_path(route)][route.http_method.lower()]
        assert operation["security"] == [{"bearerAuth": list(route.scopes)}]
        assert operation["responses"]["400"]["$ref"].endswith("/E400")
    _assert_refs_resolve(doc, doc)
    validate(doc)


def _assert_refs_resolve(doc: dict, node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = doc
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        for value in node.values():
            _assert_refs_resolve(doc, value)
    elif isinstance(node, list):
        for value in node:
            _assert_refs_resolve(doc, value)


async def test_responses_match_the_openapi_schema(stack: Stack) -> None:
    import jsonschema

    async def get(request: Any, context: Any) -> Any:
        return json_format.ParseDict(
            {"customerId": "c1", "fullName": "L*", "status": "STATUS_ACTIVE", "version": "3",
             "createTime": "2024-01-01T00:00:00Z", "birthDate": {"year": 1990}},
            customer_pb2.Customer(),
        )  # fmt: skip

    stack.backend.handlers["/bank.customer.v1.CustomerService/GetCustomer"] = get
    doc = (await stack.client.get("/openapi.json")).json()
    schema = doc["paths"]["/v1/customers/{customerId}"]["get"]["responses"]["200"]["content"]["application/json"]
    resolver_doc = {**doc, **schema["schema"]}
    ok = await stack.client.get("/v1/customers/c1", headers=auth())
    jsonschema.validate(ok.json(), resolver_doc)
    error_schema = {**doc, "$ref": "#/components/schemas/google.rpc.Status"}
    jsonschema.validate((await stack.client.get("/v1/customers/c1")).json(), error_schema)


async def test_docs_page_is_self_contained(stack: Stack) -> None:
    r = await stack.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "openapi.json" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN, nothing external


async def test_health_and_readiness(stack: Stack) -> None:
    assert (await stack.client.get("/healthz")).json() == {"status": "ok"}
    ready = await stack.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["backends"]) == {"customer", "product", "datahub"}


async def test_cors_allow_list(backend: FakeBackend) -> None:
    assert backend.server is not None
    settings = settings_for(f"127.0.0.1:{backend.server.port}", cors_origins="https://app.bank.example")
    async with gateway_for(settings) as (_, client):
        preflight = await client.options(
            "/v1/customers",
            headers={"origin": "https://app.bank.example", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.bank.example"
        assert "idempotency-key" in preflight.headers["access-control-allow-headers"]
        r = await client.get("/v1/customers/c1", headers={**auth(), "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await client.get("/v1/customers/c1", headers={**auth(), "origin": "https://app.bank.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.bank.example"


def test_secret_is_long_enough_for_the_kit() -> None:
    assert len(SECRET) >= 32


async def test_http_transport_does_not_leak_server_errors(stack: Stack) -> None:
    r = await stack.client.post("/v1/customers", content=b"\xff\xfe", headers=auth())
    assert r.status_code == 400
    assert isinstance(r, httpx.Response)
