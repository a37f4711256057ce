"""The gateway as it runs in production: ``python -m services.cli gateway`` in its own process,
on uvloop (the default event loop), served by granian and by uvicorn, calling a real gRPC
backend through grpc.aio. The in-process tests drive the ASGI app on pytest's loop; these prove
the served process works end to end on its own loop, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.procs import ServiceProcess

from .conftest import SECRET, FakeBackend, auth


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
async def test_served_gateway_on_uvloop_calls_the_backend(backend: FakeBackend, server: str, tmp_path: Path) -> None:
    assert backend.server is not None
    target = f"127.0.0.1:{backend.server.port}"
    backend.calls.clear()
    gateway = ServiceProcess(
        "gateway",
        env={
            "ZT_HTTP_SERVER": server,
            "ZT_AUTH_HS256_SECRET": SECRET,
            "ZT_CUSTOMER_TARGET": target,
            "ZT_PRODUCT_TARGET": target,
            "ZT_DATAHUB_TARGET": target,
        },
        log_dir=tmp_path,
    ).start()
    try:
        headers = {**auth(["customers:read"], client_id="proc-test"), "x-request-id": "proc-test-0001"}
        async with httpx.AsyncClient(base_url=f"http://{gateway.target}", timeout=10) as client:
            for _ in range(3):  # several requests on one keep-alive connection
                reply = await client.get("/v1/customers/c-proc-1", headers=headers)
                assert reply.status_code == 200, reply.text
            incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            traced = await client.get("/v1/customers/c-proc-1", headers={**headers, "traceparent": incoming})
        assert reply.headers["x-request-id"] == "proc-test-0001"
        assert reply.headers["traceparent"].startswith("00-")
        assert traced.headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
        calls = backend.calls_to("GetCustomer")
        assert len(calls) == 4
        assert calls[0].metadata["x-request-id"] == "proc-test-0001"
        assert calls[-1].metadata["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    finally:
        code = gateway.stop()
    assert code == 0, gateway.tail()
    lines = [json.loads(x) for x in gateway.log_text().splitlines() if x.startswith("{")]
    starting = next(x for x in lines if x.get("message") == "gateway starting")
    assert starting["server"] == server and starting["loop"] == "uvloop"
    access = [x for x in lines if x.get("message") == "http" and x["route"] != "/healthz"]
    assert len(access) == 4
    assert access[0]["route"] == "/v1/customers/{customer_id}" and access[0]["client_id"] == "proc-test"
    assert access[-1]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert headers["authorization"].split()[1] not in gateway.log_text()
