"""The product service as a real process, with a real customer service and real Kafka, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status

from bank.customer.v1 import customer_pb2
from bank.product.v1 import events_pb2, product_pb2
from services.kit.events import TOPIC_PRODUCT, TOPIC_SUBSCRIPTION, parse_record

from .conftest import ADMIN, Clients, make_customer, metadata
from .support import CREDIT, DEBIT, P, cny, posting, product_request, rid, subscribe

AUTH = metadata()


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


async def active_product(c: Clients, **kw: object) -> str:
    product = await c.product.CreateProduct(product_request(**kw), metadata=AUTH, timeout=10)  # type: ignore[arg-type]
    await c.product.PublishProduct(
        product_pb2.PublishProductRequest(product_id=product.product_id), metadata=AUTH, timeout=10
    )
    return product.product_id


async def reasons(c: Clients, product_id: str, customer_id: str, amount: money_pb2.Money | None = None) -> list[str]:
    request = product_pb2.CheckEligibilityRequest(product_id=product_id, customer_id=customer_id)
    if amount is not None:
        request.amount.CopyFrom(amount)
    result = await c.product.CheckEligibility(request, metadata=AUTH, timeout=10)
    assert result.eligible == (not result.reasons)
    return [r.code for r in result.reasons]


# --- eligibility and subscriptions --------------------------------------------------------------


async def test_an_eligible_customer_subscribes_and_posts(clients: Clients) -> None:
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    assert await reasons(c, pid, cid, cny(500)) == []
    sub = await c.product.CreateSubscription(subscribe(cid, pid, 500), metadata=AUTH, timeout=10)
    assert sub.balance == cny(500) and sub.product_type == P.TYPE_DEPOSIT
    txn = await c.product.PostTransaction(posting(cid, sub.subscription_id, CREDIT, 250), metadata=AUTH, timeout=10)
    assert txn.balance_after == cny(750)
    listed = await c.product.ListSubscriptions(
        product_pb2.ListSubscriptionsRequest(customer_id=cid), metadata=AUTH, timeout=10
    )
    assert [s.balance for s in listed.subscriptions] == [cny(750)]


async def test_each_ineligibility_reason_over_grpc(clients: Clients) -> None:
    c = clients
    deposit = await active_product(c, min_age=40, max_age=0)
    young = await active_product(c, min_age=0, max_age=30)
    wealth = await active_product(c, type_=P.TYPE_WEALTH, risk=3)
    draft = (await c.product.CreateProduct(product_request(), metadata=AUTH, timeout=10)).product_id

    pending = await make_customer(c.customer, verify=False)
    adult = await make_customer(c.customer, age=35, risk_score=None)
    assessed = await make_customer(c.customer, age=35, risk_score=55)  # C3

    assert await reasons(c, deposit, pending) == ["CUSTOMER_NOT_ACTIVE", "KYC_NOT_VERIFIED", "AGE_BELOW_MIN"]
    assert await reasons(c, deposit, adult) == ["AGE_BELOW_MIN"]
    assert await reasons(c, young, adult) == ["AGE_ABOVE_MAX"]
    assert await reasons(c, wealth, adult) == ["RISK_TOLERANCE_MISSING"]
    assert await reasons(c, wealth, assessed) == []
    assert await reasons(c, draft, assessed) == ["PRODUCT_NOT_ACTIVE"]
    assert await reasons(c, wealth, assessed, cny(99)) == ["AMOUNT_BELOW_MIN"]
    assert await reasons(c, wealth, assessed, cny(1_000_001)) == ["AMOUNT_ABOVE_MAX"]
    usd = money_pb2.Money(currency_code="USD", units=500)
    assert await reasons(c, wealth, assessed, usd) == ["CURRENCY_MISMATCH"]

    # A closed customer is no longer active.
    await c.customer.CloseCustomer(customer_pb2.CloseCustomerRequest(customer_id=assessed), metadata=ADMIN, timeout=10)
    assert await reasons(c, wealth, assessed) == ["CUSTOMER_NOT_ACTIVE"]

    # CreateSubscription refuses with FAILED_PRECONDITION carrying every reason.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await c.product.CreateSubscription(subscribe(pending, deposit, 50), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    detail = error_info(info.value)
    assert detail.reason == "NOT_ELIGIBLE"
    assert detail.metadata["reasons"] == "CUSTOMER_NOT_ACTIVE,KYC_NOT_VERIFIED,AGE_BELOW_MIN,AMOUNT_BELOW_MIN"


async def test_suitability_refuses_an_r4_wealth_product_to_a_c2_customer(clients: Clients) -> None:
    c = clients
    r4 = await active_product(c, type_=P.TYPE_WEALTH, risk=4)
    c2 = await make_customer(c.customer, risk_score=30)
    c4 = await make_customer(c.customer, risk_score=70)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await c.product.CreateSubscription(subscribe(c2, r4, 10_000), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(info.value).metadata["reasons"] == "RISK_TOLERANCE_TOO_LOW"
    sub = await c.product.CreateSubscription(subscribe(c4, r4, 10_000), metadata=AUTH, timeout=10)
    assert sub.state == product_pb2.Subscription.STATE_OPEN


async def test_unknown_customer_is_not_found(clients: Clients) -> None:
    pid = await active_product(clients)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await clients.product.CheckEligibility(
            product_pb2.CheckEligibilityRequest(product_id=pid, customer_id="no-such-customer"),
            metadata=AUTH,
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(info.value).reason == "CUSTOMER_NOT_FOUND"


async def test_an_unknown_product_is_named_first_whatever_the_lookup_says(clients: Clients) -> None:
    # (the customer lookup runs while the product is read: the product's answer still wins)
    cid = await make_customer(clients.customer)
    for customer_id in (cid, "no-such-customer"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await clients.product.CheckEligibility(
                product_pb2.CheckEligibilityRequest(product_id="no-such-product", customer_id=customer_id),
                metadata=AUTH,
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(info.value).reason == "PRODUCT_NOT_FOUND"


# --- idempotency, overdraft, concurrency ---------------------------------------------------------


async def test_subscription_and_posting_are_idempotent_on_request_id(clients: Clients) -> None:
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    key = rid()
    first = await c.product.CreateSubscription(subscribe(cid, pid, 1000, key), metadata=AUTH, timeout=10)
    again = await c.product.CreateSubscription(subscribe(cid, pid, 1000, key), metadata=AUTH, timeout=10)
    assert again.subscription_id == first.subscription_id
    post_key = rid()
    t1 = await c.product.PostTransaction(
        posting(cid, first.subscription_id, DEBIT, 300, post_key), metadata=AUTH, timeout=10
    )
    t2 = await c.product.PostTransaction(
        posting(cid, first.subscription_id, DEBIT, 300, post_key), metadata=AUTH, timeout=10
    )
    assert t1 == t2 and t1.balance_after == cny(700)
    listed = await c.product.ListSubscriptions(
        product_pb2.ListSubscriptionsRequest(customer_id=cid), metadata=AUTH, timeout=10
    )
    assert len(listed.subscriptions) == 1 and listed.subscriptions[0].balance == cny(700)
    txns = await c.product.ListTransactions(
        product_pb2.ListTransactionsRequest(customer_id=cid, subscription_id=first.subscription_id),
        metadata=AUTH,
        timeout=10,
    )
    assert len(txns.transactions) == 1


async def test_a_deposit_overdraft_is_refused(clients: Clients) -> None:
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    sub = await c.product.CreateSubscription(subscribe(cid, pid, 100), metadata=AUTH, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await c.product.PostTransaction(posting(cid, sub.subscription_id, DEBIT, 101), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(info.value).reason == "INSUFFICIENT_FUNDS"


async def test_concurrent_debits_never_overdraw(clients: Clients) -> None:
    c = clients
    # The proof that matters is PostgreSQL (real concurrent writers); SQLite runs it too.
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    opening, debit, n = 1000, 30, 50  # 33 debits fit, 17 must be refused
    sub = await c.product.CreateSubscription(subscribe(cid, pid, opening), metadata=AUTH, timeout=10)

    async def one() -> bool:
        try:
            await c.product.PostTransaction(posting(cid, sub.subscription_id, DEBIT, debit), metadata=AUTH, timeout=30)
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
            return False

    accepted = sum(await asyncio.gather(*[one() for _ in range(n)]))
    listed = await c.product.ListSubscriptions(
        product_pb2.ListSubscriptionsRequest(customer_id=cid), metadata=AUTH, timeout=10
    )
    balance = listed.subscriptions[0].balance
    assert accepted == opening // debit
    assert balance == cny(opening - debit * accepted) and balance.units >= 0


# --- events ---------------------------------------------------------------------------------------


async def consume(
    bootstrap: str, topic: str, want: Callable[[list[object]], bool], key: bytes, timeout_s: float = 20
) -> list[object]:
    """Events with ``key`` on ``topic``, from the beginning, until ``want(events)`` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[object] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not want(found):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for r in records:
                        if r.key == key:
                            found.append(parse_record(list(r.headers), r.value, key=r.key, topic=r.topic).message)
    finally:
        await consumer.stop()
    return found


async def test_events_reach_kafka_in_per_customer_order(clients: Clients, kafka_server) -> None:  # type: ignore[no-untyped-def]
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    sub = await c.product.CreateSubscription(subscribe(cid, pid, 1000), metadata=AUTH, timeout=10)
    for direction, yuan in ((CREDIT, 200), (DEBIT, 500), (DEBIT, 100)):
        await c.product.PostTransaction(posting(cid, sub.subscription_id, direction, yuan), metadata=AUTH, timeout=10)
    await c.product.CloseSubscription(
        product_pb2.CloseSubscriptionRequest(customer_id=cid, subscription_id=sub.subscription_id),
        metadata=AUTH,
        timeout=10,
    )
    events = await consume(kafka_server.bootstrap_servers, TOPIC_SUBSCRIPTION, lambda e: len(e) >= 5, cid.encode())
    assert [type(e).__name__ for e in events] == [
        "SubscriptionOpened", "TransactionPosted", "TransactionPosted", "TransactionPosted", "SubscriptionClosed",
    ]  # fmt: skip
    assert [e.version for e in events] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    posted = [e for e in events if isinstance(e, events_pb2.TransactionPosted)]
    assert [e.transaction.balance_after for e in posted] == [cny(1200), cny(700), cny(600)]
    assert all(e.product_type == P.TYPE_DEPOSIT and e.product_id == pid for e in posted)

    published = await consume(kafka_server.bootstrap_servers, TOPIC_PRODUCT, lambda e: len(e) >= 1, pid.encode())
    assert isinstance(published[0], events_pb2.ProductPublished)
    assert published[0].product.state == P.STATE_ACTIVE and published[0].product.terms.currency_code == "CNY"


# --- the lookup calls as the product service -----------------------------------------------------


async def test_the_lookup_uses_the_services_own_token(clients: Clients) -> None:
    """The app's token lacks customers:read, yet the lookup works: the product service calls as itself."""
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    assert await reasons(c, pid, cid) == []
    log = c.stack.customer.log_text()
    lookups = [line for line in log.splitlines() if "GetEligibilityProfile" in line and '"code":"OK"' in line]
    assert lookups and all("zhongtai-product" in line for line in lookups)
    assert not any("test-app" in line for line in lookups)


async def test_the_trace_travels_from_the_caller_through_the_lookup(clients: Clients) -> None:
    c = clients
    pid = await active_product(c)
    cid = await make_customer(c.customer)
    trace_id = uuid.uuid4().hex
    traced = (*AUTH, ("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"))
    result = await c.product.CheckEligibility(
        product_pb2.CheckEligibilityRequest(product_id=pid, customer_id=cid), metadata=traced, timeout=10
    )
    assert result.eligible
    lookups = [
        line
        for line in c.stack.customer.log_text().splitlines()
        if "GetEligibilityProfile" in line and trace_id in line
    ]
    assert lookups, "the customer service did not see the caller's trace"
