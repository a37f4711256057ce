"""The channel journey end to end, over HTTP through the gateway, against the real processes.

customer, product, data_hub and gateway run as ``python -m services.cli <name>`` processes on
free ports, with a real Apache Kafka (``kafka_server``) and one database per service
(PostgreSQL from ``postgres_server`` — a real cluster — for every service). Spans go to each
process's stdout (``ZT_OTEL_CONSOLE``), so the test can read them from the process logs and
check that ONE trace id, chosen by the caller's ``traceparent`` on the subscription request,
covers the gateway, the product service, the customer service (the eligibility lookup), the
outbox relay's publish and the data hub's processing of the event.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.openapi import openapi_path
from gateway.routing import discover_routes, load_contracts
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from tests.support.fuzz import ANY_JSON, request_path
from tests.support.platform import Platform
from tests.support.procs import ServiceProcess

pytestmark = pytest.mark.timeout(600)

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def national_id(birth: str = "19900517", region: str = "110105", seq: str = "001") -> str:
    """A mainland resident ID with a valid GB 11643 check digit."""
    body = region + birth + seq
    return body + _CHECK[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def _headers(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_token(DEV_SECRET, ALL_SCOPES, client_id='e2e-app')}", **extra}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()  # type: ignore[no-any-return]


async def _product(client: httpx.AsyncClient, name: str, kind: str, risk: str) -> str:
    created = _ok(
        await client.post(
            "/v1/products",
            json={
                "displayName": name,
                "type": kind,
                "riskLevel": risk,
                "terms": {
                    "currencyCode": "CNY",
                    "minAmount": {"currencyCode": "CNY", "units": "100"},
                    "maxAmount": {"currencyCode": "CNY", "units": "1000000"},
                    "termMonths": 12,
                    "annualRateBps": 250,
                },
                "eligibility": {"minAge": 18, "maxAge": 70},
            },
            headers=_headers(**{"idempotency-key": f"product-{uuid.uuid4().hex[:12]}"}),
        )
    )
    published = _ok(await client.post(f"/v1/products/{created['productId']}:publish", json={}, headers=_headers()))
    assert published["state"] == "STATE_ACTIVE"
    return str(created["productId"])


def _span_names(proc: ServiceProcess, trace_id: str) -> set[str]:
    """Names of the spans of one trace that a process printed (console span exporter)."""
    pattern = re.compile(r'"name": "([^"]+)",\s*"context": \{\s*"trace_id": "0x' + trace_id + '"')
    return set(pattern.findall(proc.log_text()))


async def test_channel_journey_through_the_gateway(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text

        deposit = await _product(client, "Smart Deposit 12M", "TYPE_DEPOSIT", "RISK_LEVEL_R1")
        risky = await _product(client, "Aggressive Fund", "TYPE_WEALTH", "RISK_LEVEL_R5")

        # create the customer with an Idempotency-Key, sent twice: one customer
        body = {
            "fullName": "Li Lei",
            "birthDate": {"year": 1990, "month": 5, "day": 17},
            "nationalId": national_id(seq=f"{uuid.uuid4().int % 1000:03d}"),
            "mobile": "13812345678",
            "email": "li.lei@example.com",
        }
        key = f"onboard-{uuid.uuid4().hex[:16]}"
        first = _ok(await client.post("/v1/customers", json=body, headers=_headers(**{"idempotency-key": key})))
        second = await client.post("/v1/customers", json=body, headers=_headers(**{"idempotency-key": key}))
        assert _ok(second)["customerId"] == first["customerId"]
        customer_id = first["customerId"]
        reused = await client.post(
            "/v1/customers", json={**body, "fullName": "Han Meimei"}, headers=_headers(**{"idempotency-key": key})
        )
        assert reused.status_code == 409

        verified = _ok(
            await client.post(
                f"/v1/customers/{customer_id}:verify", json={"outcome": "OUTCOME_APPROVED"}, headers=_headers()
            )
        )
        assert verified["status"] == "STATUS_ACTIVE" and verified["kycVerified"] is True
        assessed = _ok(
            await client.post(
                f"/v1/customers/{customer_id}:assessRisk", json={"questionnaireScore": 30}, headers=_headers()
            )
        )
        assert assessed["riskTolerance"] == "RISK_TOLERANCE_C2"

        # one suitable subscription, one refused with reasons (R5 product for a C2 customer)
        eligibility = _ok(
            await client.post(
                f"/v1/products/{risky}:checkEligibility", json={"customerId": customer_id}, headers=_headers()
            )
        )
        assert eligibility["eligible"] is False and eligibility["reasons"]
        refused = await client.post(
            f"/v1/customers/{customer_id}/subscriptions",
            json={"productId": risky, "amount": {"currencyCode": "CNY", "units": "1000"}},
            headers=_headers(),
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["details"]
        # the subscription carries the caller's trace: gateway → product → customer (eligibility)
        # → outbox → relay publish → Kafka → data hub processing
        trace_id = uuid.uuid4().hex
        subscribed = await client.post(
            f"/v1/customers/{customer_id}/subscriptions",
            json={"productId": deposit, "amount": {"currencyCode": "CNY", "units": "10000"}},
            headers=_headers(
                traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
                **{"idempotency-key": f"sub-{uuid.uuid4().hex[:12]}"},
            ),
        )
        subscription_id = _ok(subscribed)["subscriptionId"]
        assert subscribed.headers["traceparent"].split("-")[1] == trace_id

        _ok(
            await client.post(
                f"/v1/customers/{customer_id}/subscriptions/{subscription_id}/transactions",
                json={"direction": "DIRECTION_CREDIT", "amount": {"currencyCode": "CNY", "units": "500"}},
                headers=_headers(),
            )
        )

        # the unified view catches up (poll with a deadline)
        deadline = time.monotonic() + 60
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = await client.get(f"/v1/customers/{customer_id}/view", headers=_headers())
            if r.status_code == 200:
                view = r.json()
                activity = view.get("activity") or {}
                if view.get("holdings") and int(activity.get("txnCount30d", 0) or 0) >= 1:
                    break
            await asyncio.sleep(0.5)
        assert view.get("holdings"), f"view never showed the holding: {view}"
        holding = view["holdings"][0]
        assert holding["subscriptionId"] == subscription_id and holding["productId"] == deposit
        assert view["lifecycleStage"] != "LIFECYCLE_STAGE_UNSPECIFIED"
        assert "segment" in view and "offers" in view

    # one trace id across the processes (console span exporters write to the process logs)
    def spans() -> dict[str, set[str]]:
        return {name: _span_names(platform.processes[name], trace_id) for name in platform.processes}

    def covered(found: dict[str, set[str]]) -> bool:
        return (
            bool(found.get("gateway"))
            and "/bank.customer.v1.CustomerService/GetEligibilityProfile" in found.get("customer", set())
            and "/bank.product.v1.ProductService/CreateSubscription" in found.get("product", set())
            and "bank.subscription.v1 publish" in found.get("product", set())
            and "bank.subscription.v1 process" in found.get("data_hub", set())
        )

    deadline = time.monotonic() + 30
    found = spans()
    while not covered(found) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        found = spans()
    assert covered(found), f"trace {trace_id}: {found}"


def test_national_id_helper_matches_gb_11643() -> None:
    assert national_id("19491001", "110101", "002")[-1] in "0123456789X"
    assert Path(__file__).name.startswith("test_")


# --- property-based fuzzing of the running gateway + real services ------------------------------

_ROUTES = discover_routes(load_contracts())
_FIELDS = sorted({name for r in _ROUTES for fd in r.method.input_type.fields for name in (fd.name, fd.json_name)})
_BODIES = st.one_of(ANY_JSON, st.dictionaries(st.sampled_from(_FIELDS), ANY_JSON, max_size=5))
_QUERY = st.lists(
    st.tuples(st.sampled_from(["pageSize", "page_size", "pageToken", "filter", "x"]), st.text(max_size=8)), max_size=3
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzing_the_running_platform_never_yields_a_5xx_and_answers_match_the_spec(
    platform: Platform, data: st.DataObject
) -> None:
    """schemathesis-style: every route of /openapi.json with arbitrary input, against real services."""
    openapi = _openapi(platform.url)
    route = data.draw(st.sampled_from(_ROUTES))
    path = request_path(route, data.draw)
    kwargs: dict[str, Any] = {"params": data.draw(_QUERY), "headers": _headers()}
    if route.body:
        kwargs["json"] = data.draw(_BODIES)
    response = httpx.request(route.http_method, platform.url + path, timeout=30, **kwargs)
    assert response.status_code < 500, (route.full_method, path, kwargs.get("json"), response.text)
    operation = openapi["paths"][openapi_path(route)][route.http_method.lower()]
    declared = operation["responses"].get(str(response.status_code)) or operation["responses"].get("default")
    assert declared is not None, (route.full_method, response.status_code)
    if "$ref" in declared:  # "#/components/responses/E404"
        declared = openapi["components"]["responses"][declared["$ref"].rsplit("/", 1)[-1]]
    schema = declared["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**openapi, **schema})


_OPENAPI: dict[str, Any] = {}


def _openapi(url: str) -> dict[str, Any]:
    if not _OPENAPI:
        _OPENAPI.update(httpx.get(f"{url}/openapi.json", timeout=30).json())
    return _OPENAPI
