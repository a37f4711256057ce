"""A stopped customer service turns into UNAVAILABLE within the lookup deadline, never INTERNAL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from bank.customer.v1 import customer_pb2_grpc
from bank.product.v1 import product_pb2, product_pb2_grpc
from devtools import stack
from tests.support.procs import ServiceProcess

from .conftest import CUSTOMER_DEADLINE_S, make_customer, metadata, product_env, start_customer
from .support import product_request, subscribe

AUTH = metadata()


@pytest.fixture(scope="module")
def pair(kafka_server: stack.KafkaLike, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    log_dir = tmp_path_factory.mktemp("down")
    db = log_dir / "customer.db"
    customer = start_customer(kafka_server.bootstrap_servers, log_dir, db=db)
    env = product_env(kafka_server.bootstrap_servers, f"sqlite+aiosqlite:///{log_dir / 'product.db'}", customer.target)
    product = ServiceProcess("product", env=env, log_dir=log_dir).start()
    state: dict[str, object] = {"customer": customer, "product": product, "db": db, "log_dir": log_dir}
    yield state
    product.stop()
    state["customer"].stop()  # type: ignore[attr-defined]


async def test_customer_service_down_is_unavailable_within_the_deadline(
    pair: dict[str, object], kafka_server: stack.KafkaLike
) -> None:
    customer: ServiceProcess = pair["customer"]  # type: ignore[assignment]
    product: ServiceProcess = pair["product"]  # type: ignore[assignment]
    async with grpc.aio.insecure_channel(product.target) as pch, grpc.aio.insecure_channel(customer.target) as cch:
        products = product_pb2_grpc.ProductServiceStub(pch)
        created = await products.CreateProduct(product_request(), metadata=AUTH, timeout=10)
        await products.PublishProduct(
            product_pb2.PublishProductRequest(product_id=created.product_id), metadata=AUTH, timeout=10
        )
        cid = await make_customer(customer_pb2_grpc.CustomerServiceStub(cch))
        check = product_pb2.CheckEligibilityRequest(product_id=created.product_id, customer_id=cid)
        assert (await products.CheckEligibility(check, metadata=AUTH, timeout=10)).eligible

        customer.stop()
        for call in (
            lambda: products.CheckEligibility(check, metadata=AUTH, timeout=10),
            lambda: products.CreateSubscription(subscribe(cid, created.product_id, 500), metadata=AUTH, timeout=10),
        ):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call()
            elapsed = time.monotonic() - started
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert elapsed < CUSTOMER_DEADLINE_S + 0.5, elapsed

        # The caller's own shorter deadline is honoured too: DEADLINE_EXCEEDED or UNAVAILABLE, never late.
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await products.CheckEligibility(check, metadata=AUTH, timeout=0.3)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 0.8

        # Back on the same port: the long-lived channel reconnects by itself.
        # same env (keys, database) and port as before
        restarted = ServiceProcess("customer", env=customer.env, log_dir=pair["log_dir"], port=customer.port)  # type: ignore[arg-type]
        restarted.start()
        pair["customer"] = restarted
        deadline = time.monotonic() + 15
        while True:
            try:
                assert (await products.CheckEligibility(check, metadata=AUTH, timeout=10)).eligible
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "the product service did not reconnect"
