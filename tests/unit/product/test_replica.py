"""The eligibility replica (ADR 0054): when it may decide (age range, every rule), its fold, and
when it counts as caught up with the customer topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from bank.customer.v1 import customer_pb2
from bank.customer.v1 import events_pb2 as ce
from bank.product.v1 import events_pb2 as pe
from services.kit.events import ReceivedEvent
from services.product import domain as d
from services.product.replica import CatchUp, EligibilityReplica, ReplicaFreshness

from .test_domain import ACTIVE_CUSTOMER, NOW, codes, customer, product

BORN = NOW.year - 35  # 34 before the birthday this year, 35 from it on


def replicated(**kw: Any) -> d.ReplicatedFacts:
    base: dict[str, Any] = {
        "customer_id": "C-1",
        "status": ACTIVE_CUSTOMER,
        "kyc_verified": True,
        "birth_year": BORN,
        "risk_tolerance": 4,
        "risk_tolerance_expire_time": NOW + timedelta(days=300),
    }
    base.update(kw)
    return d.ReplicatedFacts(**base)


# --- the decision ----------------------------------------------------------------------------


def test_the_age_is_one_of_two_values_and_three_around_new_year() -> None:
    assert d.possible_ages(1990, datetime(2025, 6, 1, tzinfo=UTC)) == (34, 35)
    # 2025-12-31 20:00 UTC is already 2026 east of UTC+4: the business calendar may be there
    assert d.possible_ages(1990, datetime(2025, 12, 31, 20, tzinfo=UTC)) == (34, 36)
    assert d.possible_ages(1990, datetime(2026, 1, 1, 6, tzinfo=UTC)) == (34, 36)


@pytest.mark.parametrize(
    ("rules", "certain"),
    [
        (d.Rules(), True),
        (d.Rules(18, 65), True),  # 34 and 35 both inside
        (d.Rules(35, 0), False),  # 34: too young; 35: old enough
        (d.Rules(36, 0), True),  # both too young: refused for sure
        (d.Rules(0, 34), False),  # 34: fine; 35: too old
        (d.Rules(0, 35), True),
        (d.Rules(0, 33), True),  # both too old
    ],
)
def test_an_answer_is_given_only_when_both_ages_agree(rules: d.Rules, certain: bool) -> None:
    facts = product(rules=rules)
    got = d.evaluate_if_certain(facts, replicated(), None, NOW)
    if not certain:
        assert got is None
        return
    assert got is not None
    for age in (34, 35):  # the answer is the one the customer service's exact age gives
        assert got == d.evaluate_eligibility(facts, customer(age_years=age), None, NOW)


def test_an_age_refusal_for_sure_is_reported_like_the_lookup_reports_it() -> None:
    got = d.evaluate_if_certain(product(rules=d.Rules(40, 0)), replicated(), None, NOW)
    assert got is not None and codes(got) == [d.AGE_BELOW_MIN]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"status": customer_pb2.Customer.STATUS_CLOSED}, d.CUSTOMER_NOT_ACTIVE),
        ({"status": customer_pb2.Customer.STATUS_PENDING}, d.CUSTOMER_NOT_ACTIVE),
        ({"kyc_verified": False}, d.KYC_NOT_VERIFIED),
        ({"risk_tolerance": 0}, d.RISK_TOLERANCE_MISSING),
        ({"risk_tolerance_expire_time": NOW}, d.RISK_TOLERANCE_EXPIRED),  # expiring exactly now: expired
        ({"risk_tolerance": 2}, d.RISK_TOLERANCE_TOO_LOW),
    ],
)
def test_each_customer_rule_decides_locally(change: dict[str, Any], code: str) -> None:
    facts = product(risk=3, rules=d.Rules(18, 65))
    got = d.evaluate_if_certain(facts, replicated(**change), None, NOW)
    assert got is not None and code in codes(got)
    assert got == d.evaluate_eligibility(facts, customer(**change), None, NOW)


def test_a_closed_customer_near_an_age_bound_is_still_not_certain() -> None:
    """Both ends must agree on the WHOLE answer: the age reason differs, so the lookup decides."""
    got = d.evaluate_if_certain(product(rules=d.Rules(35, 0)), replicated(kyc_verified=False), None, NOW)
    assert got is None


def test_an_unknown_birth_year_is_never_decided_locally() -> None:
    assert d.evaluate_if_certain(product(), replicated(birth_year=0), None, NOW) is None


def test_amount_reasons_come_along() -> None:
    got = d.evaluate_if_certain(product(), replicated(), d.Amount(1, "CNY"), NOW)
    assert got is not None and codes(got) == [d.AMOUNT_BELOW_MIN]


# --- the fold ----------------------------------------------------------------------------------


def _event(message: Any, version: int, offset: int = 0) -> ReceivedEvent:
    return ReceivedEvent(
        id=f"e-{version}-{offset}", type=message.DESCRIPTOR.full_name, source="customer", subject="C-1",
        time=NOW, aggregate_type="customer", aggregate_id="C-1", version=version, message=message, offset=offset,
    )  # fmt: skip


def _snapshot(version: int, **kw: Any) -> ce.CustomerSnapshot:
    return ce.CustomerSnapshot(customer_id="C-1", birth_year=1990, version=version, full_name_masked="张*", **kw)


def test_the_fold_keeps_each_customers_newest_snapshot_and_ignores_other_events() -> None:
    expires = Timestamp(seconds=1_800_000_000, nanos=123_456_000)
    assessed = _snapshot(3, status=2, kyc_verified=True, risk_tolerance=4, risk_tolerance_expire_time=expires)
    verified = _snapshot(2, status=2, kyc_verified=True)
    events = [
        _event(ce.CustomerCreated(customer_id="C-1", customer=_snapshot(1, status=1), version=1), 1),
        _event(ce.CustomerRiskAssessed(customer_id="C-1", customer=assessed, version=3), 3),
        _event(ce.CustomerVerified(customer_id="C-1", customer=verified, version=2), 2),
        _event(pe.ProductPublished(product_id="P-1", version=1), 1),
    ]
    (row,) = EligibilityReplica().fold(events)
    assert row == {
        "customer_id": "C-1", "status": 2, "kyc_verified": True, "birth_year": 1990, "risk_tolerance": 4,
        "risk_expire_us": 1_800_000_000_123_456, "version": 3,
    }  # fmt: skip


# --- caught up? ------------------------------------------------------------------------------

T0, T1 = TopicPartition("bank.customer.v1", 0), TopicPartition("bank.customer.v1", 1)


def test_caught_up_as_of_the_probe_whose_ends_the_group_has_committed() -> None:
    catch = CatchUp()
    catch.observe(10.0, {T0: 5, T1: 3}, {T0: 7, T1: 3}, {})  # 2 records behind on T0
    assert catch.as_of is None
    catch.observe(10.5, {T0: 7, T1: 3}, {T0: 9, T1: 3}, {})  # the first probe's ends reached; new records
    assert catch.as_of == 10.0
    catch.observe(11.0, {T0: 9, T1: 3}, {T0: 9, T1: 3}, {})
    assert catch.as_of == 11.0


def test_a_partition_never_committed_counts_from_its_first_record() -> None:
    catch = CatchUp()
    catch.observe(1.0, {T0: None, T1: None}, {T0: 0, T1: 4}, {T1: 4})  # empty / retention removed all
    assert catch.as_of == 1.0
    catch.observe(2.0, {T0: None}, {T0: 2}, {})
    assert catch.as_of == 1.0


class FakeProbe:
    def __init__(self) -> None:
        self.figures: tuple[Any, Any, Any] | Exception = ({T0: 3}, {T0: 3}, {})
        self.closed = 0

    async def read(self) -> tuple[Any, Any, Any]:
        if isinstance(self.figures, Exception):
            raise self.figures
        return self.figures

    async def close(self) -> None:
        self.closed += 1


async def test_freshness_ages_out_when_the_group_lags_or_the_probe_fails() -> None:
    now = [100.0]
    probe = FakeProbe()
    fresh = ReplicaFreshness(probe, max_staleness_s=1.5, probe_interval_s=0.25, clock=lambda: now[0])  # type: ignore[arg-type]
    assert not fresh.caught_up()  # never probed: ask the customer service
    await fresh.probe_once()
    assert fresh.caught_up()
    probe.figures = ({T0: 3}, {T0: 8}, {})  # 5 records behind, and it stays behind
    for _ in range(6):
        now[0] += 0.25
        await fresh.probe_once()
    assert fresh.caught_up() is True  # 1.5 s: still within the bound
    now[0] += 0.01
    assert not fresh.caught_up()
    probe.figures = ({T0: 8}, {T0: 8}, {})
    await fresh.probe_once()
    assert fresh.caught_up()  # every pending probe's ends are reached, this one's too
    assert fresh.staleness_s() == 0.0
    probe.figures = ConnectionError("broker away")
    now[0] += 2.0
    with pytest.raises(ConnectionError):
        await fresh.probe_once()
    assert not fresh.caught_up()


async def test_the_probes_run_only_while_checks_ask() -> None:
    now = [0.0]
    probe = FakeProbe()
    calls = 0
    read = probe.read

    async def counted() -> tuple[Any, Any, Any]:
        nonlocal calls
        calls += 1
        return await read()

    probe.read = counted  # type: ignore[method-assign]
    fresh = ReplicaFreshness(probe, max_staleness_s=1.5, probe_interval_s=0.01, idle_after_s=5, clock=lambda: now[0])  # type: ignore[arg-type]
    await fresh.start()
    try:
        await asyncio.sleep(0.05)
        assert calls == 0  # nobody asked: no probe
        assert not fresh.caught_up()  # the first check asks the customer service, and wakes the probes
        await asyncio.sleep(0.05)
        assert calls >= 1 and fresh.caught_up()
        now[0] += 6  # a quiet spell: the probes stop
        await asyncio.sleep(0.05)
        stopped_at = calls
        await asyncio.sleep(0.05)
        assert calls == stopped_at
    finally:
        await fresh.stop()
    assert probe.closed
