"""A view the hub has not built yet is said distinctly (ADR 0008), on real PostgreSQL, a real
customer service and real Kafka, over gRPC and through the gateway.

The customer service runs with its outbox relay off: its CustomerCreated waits in the outbox, as
it does while the broker is down, so the hub never hears of the new customer. Then:

- the customer exists → UNAVAILABLE ``VIEW_NOT_BUILT`` + RetryInfo (HTTP 503, Retry-After);
- an id the customer service does not know → NOT_FOUND ``CUSTOMER_NOT_FOUND`` (HTTP 404);
- the customer service is down → UNAVAILABLE ``CUSTOMER_SERVICE_UNAVAILABLE``, within the
  hub's lookup deadline;
- the customer service comes back with its relay on → the event flows and the same request
  that said "retry" is served the view.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from bank.customer.v1 import customer_pb2_grpc
from bank.datahub.v1 import datahub_pb2
from services.cli import DEV_SECRET
from services.kit.auth import mint_token
from tests.integration.product.conftest import make_customer
from tests.support.procs import ServiceProcess

from .conftest import META, error_details, hub, namespace, stub, wait_until

LOOKUP_DEADLINE_S = 0.5


def customer_env(kafka: str, db: Path, topic_prefix: str) -> dict[str, str]:
    return {
        "ZT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ZT_KAFKA_TOPIC_PREFIX": topic_prefix,
        "ZT_KAFKA_TOPIC_PARTITIONS": "3",
        "ZT_PII_KEY": base64.b64encode(os.urandom(32)).decode(),
        "ZT_PII_KEY_ID": "k1",
        "ZT_BLIND_INDEX_KEY": base64.b64encode(os.urandom(32)).decode(),
        "ZT_OUTBOX_POLL_INTERVAL_S": "0.2",
    }


async def get_view(api, customer_id: str):  # type: ignore[no-untyped-def]
    return await api.GetCustomerView(
        datahub_pb2.GetCustomerViewRequest(customer_id=customer_id), metadata=META, timeout=5
    )


async def test_a_new_customer_without_a_view_is_view_not_built_an_unknown_one_not_found_and_a_down_directory_unavailable(  # noqa: E501
    kafka_server, pg_url, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    bootstrap = kafka_server.bootstrap_servers
    ns = namespace()
    env = customer_env(bootstrap, tmp_path / "customer.db", ns)
    customer = ServiceProcess("customer", env={**env, "ZT_OUTBOX_RELAY_ENABLED": "false"}, log_dir=tmp_path).start()
    data_hub = hub(
        pg_url,
        bootstrap,
        tmp_path,
        topic_prefix=ns,
        ZT_CUSTOMER_TARGET=customer.target,
        ZT_DATAHUB_CUSTOMER_DEADLINE_S=str(LOOKUP_DEADLINE_S),
    ).start()
    gateway = ServiceProcess(
        "gateway",
        env={
            "ZT_CUSTOMER_TARGET": customer.target,
            "ZT_PRODUCT_TARGET": customer.target,
            "ZT_DATAHUB_TARGET": data_hub.target,
        },
        log_dir=tmp_path,
    ).start()
    customers_channel = grpc.aio.insecure_channel(customer.target)
    channel, api = stub(data_hub.target)
    bearer = mint_token(DEV_SECRET, ["views:read"], client_id="view-not-built-test")
    http = httpx.AsyncClient(
        base_url=f"http://{gateway.target}", headers={"authorization": f"Bearer {bearer}"}, timeout=10
    )
    try:
        cid = await make_customer(customer_pb2_grpc.CustomerServiceStub(customers_channel), verify=False)

        # 1. The customer exists, its view does not (its event is still in the outbox).
        with pytest.raises(grpc.aio.AioRpcError) as pending:
            await get_view(api, cid)
        assert pending.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(pending.value) == ("VIEW_NOT_BUILT", {"customer_id": cid}, 1.0)
        assert "being built" in (pending.value.details() or "")
        reply = await http.get(f"/v1/customers/{cid}/view")
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1", reply.text
        body = reply.json()
        reasons = [d.get("reason") for d in body["details"]]
        assert "VIEW_NOT_BUILT" in reasons
        assert any(d["@type"].endswith("google.rpc.RetryInfo") and d["retryDelay"] == "1s" for d in body["details"])

        # 2. An id the system of record does not know.
        unknown = f"C{uuid.uuid4().hex[:12]}"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await get_view(api, unknown)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_details(missing.value) == ("CUSTOMER_NOT_FOUND", {"customer_id": unknown}, None)
        reply = await http.get(f"/v1/customers/{unknown}/view")
        assert reply.status_code == 404 and "retry-after" not in reply.headers
        assert [d.get("reason") for d in reply.json()["details"]] == ["CUSTOMER_NOT_FOUND"]

        # 3. The customer service is down: the hub cannot tell, and says so in time.
        customer.stop()
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await get_view(api, cid)
        assert time.monotonic() - started < LOOKUP_DEADLINE_S + 1.0
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        reason, meta, delay = error_details(down.value)
        assert reason == "CUSTOMER_SERVICE_UNAVAILABLE" and meta["customer_id"] == cid and delay is None
        reply = await http.get(f"/v1/customers/{cid}/view")
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert "CUSTOMER_SERVICE_UNAVAILABLE" in [d.get("reason") for d in reply.json()["details"]]

        # 4. It comes back with its relay on: the event reaches the hub, the retry gets the view.
        customer = ServiceProcess("customer", env=env, log_dir=tmp_path, port=customer.port).start()

        async def served() -> bool:
            try:
                return (await get_view(api, cid)).customer_id == cid
            except grpc.aio.AioRpcError as exc:
                # the hub's channel reconnects by itself (after gRPC's reconnect backoff)
                assert error_details(exc)[0] in ("VIEW_NOT_BUILT", "CUSTOMER_SERVICE_UNAVAILABLE"), exc
                return False

        await wait_until(served, 60, "the view of the new customer")
        reply = await http.get(f"/v1/customers/{cid}/view")
        assert reply.status_code == 200 and reply.json()["customerId"] == cid
    finally:
        await http.aclose()
        await channel.close()
        await customers_channel.close()
        gateway.stop()
        data_hub.stop()
        customer.stop()
