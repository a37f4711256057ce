"""CheckEligibility from the eligibility replica (ADR 0054) on real PostgreSQL and SQLite: the
projection's upsert, the one-statement read, each way it falls back to the customer service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2
from bank.customer.v1 import events_pb2 as ce
from bank.product.v1 import product_pb2
from services.kit.db import UnitOfWork
from services.kit.errors import NotFound, Unavailable
from services.kit.events import ReceivedEvent
from services.product import replica
from services.product.domain import CustomerProfile
from services.product.usecases import ProductUseCases

from .support import product_request
from .test_usecases_db import FakeDirectory

ACTIVE = customer_pb2.Customer.STATUS_ACTIVE


class Fresh:
    def __init__(self) -> None:
        self.value = True

    def caught_up(self) -> bool:
        return self.value


def row(customer_id: str, version: int, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": customer_id, "status": ACTIVE, "kyc_verified": True,
        "birth_year": datetime.now(UTC).year - 40, "risk_tolerance": 3,
        "risk_expire_us": int((datetime.now(UTC) + timedelta(days=30)).timestamp() * 1_000_000), "version": version,
    }  # fmt: skip
    base.update(kw)
    return base


async def project(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with UnitOfWork(engine) as uow:
        await replica.EligibilityReplica().apply(uow.session, list(rows))
        await uow.commit()


async def active_product(uc: ProductUseCases, **kw: Any) -> str:
    product = await uc.create_product(product_request(**kw))
    await uc.publish_product(product_pb2.PublishProductRequest(product_id=product.product_id))
    return product.product_id


def check(pid: str, cid: str) -> product_pb2.CheckEligibilityRequest:
    return product_pb2.CheckEligibilityRequest(product_id=pid, customer_id=cid)


def answers() -> dict[tuple[str, str], int]:
    return dict(replica.ANSWERS)


def delta(before: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: v - before.get(k, 0) for k, v in replica.ANSWERS.items() if v != before.get(k, 0)}


async def test_the_replica_answers_and_each_fallback_asks_the_customer_service(engine: AsyncEngine) -> None:
    directory, fresh = FakeDirectory(), Fresh()
    uc = ProductUseCases(engine, directory, replica=fresh)
    pid = await active_product(uc, min_age=18, max_age=70)
    # the directory disagrees with the replica on purpose: which one answered shows in the result
    directory.add("C-1", kyc_verified=False)
    await project(engine, row("C-1", 2))

    before = answers()
    assert (await uc.check_eligibility(check(pid, "C-1"))).eligible  # the replica: KYC verified
    assert delta(before) == {("replica", ""): 1}

    before = answers()
    fresh.value = False  # lagging: the lookup answers (KYC not verified there)
    assert [r.code for r in (await uc.check_eligibility(check(pid, "C-1"))).reasons] == ["KYC_NOT_VERIFIED"]
    fresh.value = True
    directory.add("C-3")
    assert (await uc.check_eligibility(check(pid, "C-3"))).eligible  # not in the replica yet
    with pytest.raises(NotFound):
        await uc.check_eligibility(check(pid, "C-unknown"))  # nowhere: the customer service says so
    assert delta(before) == {("customer_service", "replica_behind"): 1, ("customer_service", "not_replicated"): 1}

    with pytest.raises(NotFound) as info:
        await uc.check_eligibility(check("no-such-product", "C-1"))
    assert info.value.reason == "PRODUCT_NOT_FOUND"


class DownDirectory(FakeDirectory):
    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile:
        raise Unavailable("customer service unavailable", reason="CUSTOMER_SERVICE_UNAVAILABLE")


def codes(result: product_pb2.EligibilityResult) -> list[str]:
    return [r.code for r in result.reasons]


async def test_a_refusal_on_the_customers_own_facts_is_the_customer_services(engine: AsyncEngine) -> None:
    """ADR 0061: the replica may be a moment behind an approval; its "no" on the customer's facts
    is confirmed, its "no" on the amount is the product's own, and with the customer service down
    its "no" is the answer."""
    directory = FakeDirectory()
    uc = ProductUseCases(engine, directory, replica=Fresh())
    pid = await active_product(uc, min_age=18, max_age=70)
    closed = customer_pb2.Customer.STATUS_CLOSED
    # C-2 approved a moment ago, C-5 closed: the replica has heard of neither yet
    directory.add("C-2")
    directory.add("C-5", status=closed)
    await project(engine, row("C-2", 1, kyc_verified=False), row("C-5", 1), row("C-6", 1, status=closed))

    before = answers()
    assert (await uc.check_eligibility(check(pid, "C-2"))).eligible
    assert codes(await uc.check_eligibility(check(pid, "C-5"))) == []  # (the stated trade of ADR 0054)
    small = product_pb2.CheckEligibilityRequest(
        product_id=pid, customer_id="C-5", amount={"currency_code": "CNY", "units": 1}
    )
    assert codes(await uc.check_eligibility(small)) == ["AMOUNT_BELOW_MIN"]  # not in the directory's reply
    assert delta(before) == {("customer_service", "refusal_confirmed"): 1, ("replica", ""): 2}

    down = ProductUseCases(engine, DownDirectory(), replica=Fresh())
    before = answers()
    assert codes(await down.check_eligibility(check(pid, "C-6"))) == ["CUSTOMER_NOT_ACTIVE"]
    assert (await down.check_eligibility(check(pid, "C-5"))).eligible
    with pytest.raises(Unavailable):
        await down.check_eligibility(check(pid, "C-7"))  # not replicated: nothing to answer with
    assert delta(before) == {("replica", "refusal_unconfirmed"): 1, ("replica", ""): 1}


async def test_an_age_the_birth_year_cannot_settle_asks_the_customer_service(engine: AsyncEngine) -> None:
    directory = FakeDirectory()
    uc = ProductUseCases(engine, directory, replica=Fresh())
    this_year = datetime.now(UTC).year
    pid = await active_product(uc, min_age=18)
    directory.add("C-18", age_years=17)
    await project(engine, row("C-18", 1, birth_year=this_year - 18))  # 17 or 18
    before = answers()
    result = await uc.check_eligibility(check(pid, "C-18"))
    assert [r.code for r in result.reasons] == ["AGE_BELOW_MIN"]  # the customer service's exact age
    assert delta(before) == {("customer_service", "age_uncertain"): 1}


async def test_a_newer_snapshot_replaces_the_row(engine: AsyncEngine) -> None:
    await project(engine, row("C-1", 1, kyc_verified=False))
    await project(engine, row("C-1", 4, status=customer_pb2.Customer.STATUS_CLOSED, risk_expire_us=None))
    table = replica.CustomerEligibilityRow.__table__
    async with engine.connect() as conn:
        stored = (await conn.execute(select(table))).mappings().all()
    assert [dict(r) for r in stored] == [row("C-1", 4, status=customer_pb2.Customer.STATUS_CLOSED, risk_expire_us=None)]


def _customer_event(customer_id: str, version: int) -> ReceivedEvent:
    snapshot = ce.CustomerSnapshot(customer_id=customer_id, status=ACTIVE, version=version)
    return ReceivedEvent(
        id=f"e-{customer_id}-{version}", type="bank.customer.v1.CustomerUpdated", source="customer",
        subject=customer_id, time=datetime.now(UTC), aggregate_type="customer", aggregate_id=customer_id,
        version=version, message=ce.CustomerUpdated(customer_id=customer_id, customer=snapshot, version=version),
    )  # fmt: skip


def _record(key: bytes | None) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("bank.customer.v1", 0, 7, 0, 0, key, b"\x00not-an-event", None, 0, 14, [])


async def test_a_dead_lettered_customer_event_sends_its_checks_to_the_customer_service(engine: AsyncEngine) -> None:
    """ADR 0065: the replica forgets a customer whose event it dead-lettered (unless its row is
    already newer), so checks ask the customer service instead of answering from the facts before
    the lost change; the customer's next snapshot brings the row back."""
    directory, projection = FakeDirectory(), replica.EligibilityReplica()
    uc = ProductUseCases(engine, directory, replica=Fresh())
    pid = await active_product(uc, min_age=18, max_age=70)
    for cid in ("C-1", "C-2", "C-3"):
        directory.add(cid, kyc_verified=False)  # what the lost change said: the replica disagrees
    await project(engine, row("C-1", 3), row("C-2", 5), row("C-3", 1))

    async with UnitOfWork(engine) as uow:
        await projection.dead_lettered(uow.session, _record(b"C-1"), _customer_event("C-1", 4))
        await projection.dead_lettered(uow.session, _record(b"C-2"), _customer_event("C-2", 4))  # older: kept
        await projection.dead_lettered(uow.session, _record(b"C-3"), None)  # never decoded: by its key
        await projection.dead_lettered(uow.session, _record(None), None)  # no key: nothing to forget
        await uow.commit()

    table = replica.CustomerEligibilityRow.__table__
    async with engine.connect() as conn:
        assert (await conn.execute(select(table.c.customer_id, table.c.version))).all() == [("C-2", 5)]
    before = answers()
    refused = [[r.code for r in (await uc.check_eligibility(check(pid, cid))).reasons] for cid in ("C-1", "C-3")]
    assert refused == [["KYC_NOT_VERIFIED"], ["KYC_NOT_VERIFIED"]]
    assert (await uc.check_eligibility(check(pid, "C-2"))).eligible  # still the replica's
    assert delta(before) == {("customer_service", "not_replicated"): 2, ("replica", ""): 1}

    await project(engine, row("C-1", 5))  # the customer's next event
    before = answers()
    assert (await uc.check_eligibility(check(pid, "C-1"))).eligible
    assert delta(before) == {("replica", ""): 1}
