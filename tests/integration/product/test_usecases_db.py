"""Use cases on real PostgreSQL and SQLite with a fake customer lookup (the gRPC tests use a real one)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2
from bank.product.v1 import product_pb2
from services.kit.commands import CommandRecord
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.kit.outbox import OutboxRow
from services.product.domain import CustomerProfile
from services.product.store import SubscriptionRow
from services.product.usecases import ProductUseCases

from .support import CREDIT, DEBIT, P, cny, posting, product_request, rid, subscribe


class FakeDirectory:
    def __init__(self) -> None:
        self.profiles: dict[str, CustomerProfile] = {}

    def add(self, customer_id: str, **kw: object) -> str:
        base = {
            "status": customer_pb2.Customer.STATUS_ACTIVE,
            "kyc_verified": True,
            "age_years": 30,
            "risk_tolerance": 3,
            "risk_tolerance_expire_time": datetime.now(UTC) + timedelta(days=30),
        }
        base.update(kw)
        self.profiles[customer_id] = CustomerProfile(customer_id=customer_id, **base)  # type: ignore[arg-type]
        return customer_id

    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        if customer_id not in self.profiles:
            raise NotFound("customer not found")
        return self.profiles[customer_id]


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory()


@pytest.fixture
def uc(engine: AsyncEngine, directory: FakeDirectory) -> ProductUseCases:
    return ProductUseCases(engine, directory)


async def active_product(uc: ProductUseCases, **kw: object) -> str:
    product = await uc.create_product(product_request(**kw))  # type: ignore[arg-type]
    await uc.publish_product(product_pb2.PublishProductRequest(product_id=product.product_id))
    return product.product_id


async def outbox_types(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(select(OutboxRow.event_type).order_by(OutboxRow.id))).all())


async def test_catalogue_lifecycle_emits_published_and_retired(uc: ProductUseCases, engine: AsyncEngine) -> None:
    created = await uc.create_product(product_request())
    assert created.state == P.STATE_DRAFT and created.version == 1
    published = await uc.publish_product(product_pb2.PublishProductRequest(product_id=created.product_id))
    assert published.state == P.STATE_ACTIVE and published.version == 2 and published.HasField("publish_time")
    with pytest.raises(FailedPrecondition):
        await uc.publish_product(product_pb2.PublishProductRequest(product_id=created.product_id))
    retired = await uc.retire_product(
        product_pb2.RetireProductRequest(product_id=created.product_id, etag=published.etag)
    )
    assert retired.state == P.STATE_RETIRED
    assert await outbox_types(engine) == ["bank.product.v1.ProductPublished", "bank.product.v1.ProductRetired"]


async def test_inconsistent_terms_are_invalid_with_the_field(uc: ProductUseCases) -> None:
    with pytest.raises(InvalidArgument) as info:
        await uc.create_product(product_request(min_yuan=500, max_yuan=100))
    assert [v.field for v in info.value.violations] == ["product.terms.max_amount"]


async def test_create_product_is_idempotent_on_request_id(uc: ProductUseCases) -> None:
    key = rid()
    first = await uc.create_product(product_request(request_id=key))
    again = await uc.create_product(product_request(request_id=key))
    assert again == first
    with pytest.raises(AlreadyExists):
        await uc.create_product(product_request(rate_bps=300, request_id=key))


async def test_subscribe_post_and_list(uc: ProductUseCases, directory: FakeDirectory, engine: AsyncEngine) -> None:
    pid = await active_product(uc)
    cid = directory.add("C-1")
    sub = await uc.create_subscription(subscribe(cid, pid, 1000))
    assert sub.balance == cny(1000) and sub.state == product_pb2.Subscription.STATE_OPEN
    t1 = await uc.post_transaction(posting(cid, sub.subscription_id, CREDIT, 500))
    t2 = await uc.post_transaction(posting(cid, sub.subscription_id, DEBIT, 1500))
    assert t1.balance_after == cny(1500) and t2.balance_after == cny(0)
    with pytest.raises(FailedPrecondition) as info:
        await uc.post_transaction(posting(cid, sub.subscription_id, DEBIT, 1))
    assert info.value.reason == "INSUFFICIENT_FUNDS"
    page1 = await uc.list_transactions(
        product_pb2.ListTransactionsRequest(customer_id=cid, subscription_id=sub.subscription_id, page_size=1)
    )
    assert [t.transaction_id for t in page1.transactions] == [t2.transaction_id]  # newest first
    page2 = await uc.list_transactions(
        product_pb2.ListTransactionsRequest(
            customer_id=cid, subscription_id=sub.subscription_id, page_size=1, page_token=page1.next_page_token
        )
    )
    assert [t.transaction_id for t in page2.transactions] == [t1.transaction_id] and not page2.next_page_token
    with pytest.raises(NotFound):
        await uc.post_transaction(posting("C-other", sub.subscription_id, CREDIT, 1))
    closed = await uc.close_subscription(
        product_pb2.CloseSubscriptionRequest(customer_id=cid, subscription_id=sub.subscription_id)
    )
    assert closed.state == product_pb2.Subscription.STATE_CLOSED and closed.version == 4
    with pytest.raises(FailedPrecondition) as info:
        await uc.post_transaction(posting(cid, sub.subscription_id, CREDIT, 1))
    assert info.value.reason == "SUBSCRIPTION_NOT_OPEN"
    types = await outbox_types(engine)
    assert types[-4:] == [
        "bank.product.v1.SubscriptionOpened",
        "bank.product.v1.TransactionPosted",
        "bank.product.v1.TransactionPosted",
        "bank.product.v1.SubscriptionClosed",
    ]


async def test_a_product_retired_during_the_lookup_refuses_the_subscription_and_writes_nothing(
    uc: ProductUseCases, directory: FakeDirectory, engine: AsyncEngine
) -> None:
    """The product row was read ACTIVE before the customer lookup; it is retired while the lookup
    is out: NOT_ELIGIBLE (PRODUCT_NOT_ACTIVE), and no subscription, event or idempotency record."""
    pid = await active_product(uc)
    cid = directory.add("C-R")
    asked = directory.profile

    async def retiring(customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        await uc.retire_product(product_pb2.RetireProductRequest(product_id=pid))
        return await asked(customer_id, time_remaining=time_remaining)

    directory.profile = retiring  # type: ignore[method-assign]
    events_before = await outbox_types(engine)
    with pytest.raises(FailedPrecondition) as info:
        await uc.create_subscription(subscribe(cid, pid, 1000, request_id=rid()))
    assert info.value.reason == "NOT_ELIGIBLE" and info.value.metadata["reasons"] == "PRODUCT_NOT_ACTIVE"
    assert info.value.preconditions[0].subject == f"products/{pid}"
    assert await outbox_types(engine) == [*events_before, "bank.product.v1.ProductRetired"]
    async with engine.connect() as conn:
        subscriptions = select(func.count()).select_from(SubscriptionRow).where(SubscriptionRow.customer_id == cid)
        records = select(func.count()).select_from(CommandRecord).where(CommandRecord.key.like("CreateSubscription:%"))
        assert await conn.scalar(subscriptions) == 0 and await conn.scalar(records) == 0
    directory.profile = asked  # type: ignore[method-assign]
    live = await active_product(uc)
    assert (await uc.create_subscription(subscribe(cid, live, 1000))).product_id == live  # (the guard passes)


async def test_ineligible_subscription_lists_every_reason(uc: ProductUseCases, directory: FakeDirectory) -> None:
    pid = await active_product(uc, type_=P.TYPE_WEALTH, risk=4)
    cid = directory.add("C-2", risk_tolerance=2, kyc_verified=False)
    with pytest.raises(FailedPrecondition) as info:
        await uc.create_subscription(subscribe(cid, pid, 50))
    assert info.value.reason == "NOT_ELIGIBLE"
    assert info.value.metadata["reasons"] == "KYC_NOT_VERIFIED,RISK_TOLERANCE_TOO_LOW,AMOUNT_BELOW_MIN"


async def test_idempotent_posting_applies_once(uc: ProductUseCases, directory: FakeDirectory) -> None:
    pid = await active_product(uc)
    cid = directory.add("C-3")
    sub = await uc.create_subscription(subscribe(cid, pid, 1000, request_id=rid()))
    key = rid()
    results = await asyncio.gather(
        *[uc.post_transaction(posting(cid, sub.subscription_id, DEBIT, 100, key)) for _ in range(5)]
    )
    assert len({r.transaction_id for r in results}) == 1
    subs = await uc.list_subscriptions(product_pb2.ListSubscriptionsRequest(customer_id=cid))
    assert subs.subscriptions[0].balance == cny(900)


async def test_concurrent_debits_never_overdraw(
    uc: ProductUseCases, directory: FakeDirectory, engine: AsyncEngine
) -> None:
    pid = await active_product(uc)
    cid = directory.add("C-4")
    sub = await uc.create_subscription(subscribe(cid, pid, 1000))

    async def debit() -> bool:
        try:
            await uc.post_transaction(posting(cid, sub.subscription_id, DEBIT, 70))
            return True
        except FailedPrecondition:
            return False

    accepted = sum(await asyncio.gather(*[debit() for _ in range(30)]))
    balance = (await uc.list_subscriptions(product_pb2.ListSubscriptionsRequest(customer_id=cid))).subscriptions[0]
    assert accepted == 14  # 14 * 70 = 980 <= 1000 < 15 * 70
    assert balance.balance == cny(1000 - 70 * accepted)
    async with engine.connect() as conn:
        n = await conn.scalar(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.event_type == "bank.product.v1.TransactionPosted")
        )
    assert n == accepted
