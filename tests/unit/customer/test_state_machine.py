from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.customer.domain import (
    ADULT_AGE,
    TERMINAL,
    Customer,
    CustomerClosed,
    CustomerCreated,
    CustomerRejected,
    CustomerRiskAssessed,
    CustomerUpdated,
    CustomerVerified,
    IllegalTransition,
    PersonalData,
    RiskTolerance,
    Status,
    ValidationFailed,
    register,
)
from tests.unit.customer.ids import make_id

TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def new_customer(born: date = date(1990, 3, 7)) -> Customer:
    personal = PersonalData("张三", born, make_id(born), "13812345678", "zhang@example.com")
    customer, event = register("c-1", personal, today=TODAY, now=NOW)
    assert isinstance(event, CustomerCreated) and event.customer is customer
    return customer


def test_a_new_customer_is_pending_version_1() -> None:
    c = new_customer()
    assert (c.status, c.kyc_verified, c.version, c.risk_tolerance) == (Status.PENDING, False, 1, None)


def test_register_collects_every_violation() -> None:
    bad = PersonalData("", date(1990, 1, 1), "123", "1", "nope")
    with pytest.raises(ValidationFailed) as err:
        register("c-1", bad, today=TODAY, now=NOW)
    assert {v.field for v in err.value.violations} == {"full_name", "national_id", "mobile", "email"}


def test_approve_activates_an_adult() -> None:
    c, event = new_customer().approve(today=TODAY, now=NOW)
    assert (c.status, c.kyc_verified, c.version) == (Status.ACTIVE, True, 2)
    assert isinstance(event, CustomerVerified)


def test_a_minor_cannot_become_active() -> None:
    minor = new_customer(born=date(TODAY.year - ADULT_AGE, TODAY.month, TODAY.day + 1))
    with pytest.raises(IllegalTransition) as err:
        minor.approve(today=TODAY, now=NOW)
    assert err.value.reason == "CUSTOMER_UNDERAGE"


def test_reject_then_nothing_else() -> None:
    c, event = new_customer().reject("documents forged", now=NOW)
    assert c.status == Status.REJECTED and isinstance(event, CustomerRejected) and event.reason
    for action in (
        lambda: c.approve(today=TODAY, now=NOW),
        lambda: c.close("x", now=NOW),
        lambda: c.assess_risk(50, now=NOW),
        lambda: c.update({"mobile": "13900000000"}, today=TODAY, now=NOW),
    ):
        with pytest.raises(IllegalTransition):
            action()


def test_close_needs_active() -> None:
    with pytest.raises(IllegalTransition) as err:
        new_customer().close("bye", now=NOW)
    assert err.value.reason == "CUSTOMER_NOT_ACTIVE"
    active, _ = new_customer().approve(today=TODAY, now=NOW)
    closed, event = active.close("bye", now=NOW)
    assert closed.status == Status.CLOSED and isinstance(event, CustomerClosed)
    with pytest.raises(IllegalTransition) as again:
        closed.approve(today=TODAY, now=NOW)
    assert again.value.reason == "CUSTOMER_NOT_PENDING"


def test_assess_risk_sets_tolerance_and_expiry() -> None:
    c, event = new_customer().assess_risk(63, now=NOW, validity=timedelta(days=30))
    assert c.risk_tolerance == RiskTolerance.C4 and c.risk_tolerance_expire_time == NOW + timedelta(days=30)
    assert isinstance(event, CustomerRiskAssessed) and event.previous_risk_tolerance is None
    c2, event2 = c.assess_risk(10, now=NOW)
    assert c2.risk_tolerance == RiskTolerance.C1 and event2.previous_risk_tolerance == RiskTolerance.C4


def test_update_reports_changed_fields_and_skips_no_ops() -> None:
    c = new_customer()
    same, none = c.update({"mobile": c.personal.mobile}, today=TODAY, now=NOW)
    assert same is c and none is None
    c2, event = c.update({"mobile": "13900000000", "email": ""}, today=TODAY, now=NOW)
    assert isinstance(event, CustomerUpdated) and event.changed_fields == ("email", "mobile")
    assert c2.version == 2 and c2.personal.email == ""


def test_update_cannot_contradict_the_national_id() -> None:
    with pytest.raises(ValidationFailed) as err:
        new_customer().update({"birth_date": date(1991, 1, 1)}, today=TODAY, now=NOW)
    assert [v.field for v in err.value.violations] == ["birth_date"]


def test_personal_data_never_prints() -> None:
    assert "13812345678" not in repr(new_customer())


ACTIONS = st.sampled_from(["approve", "reject", "close", "risk", "update"])


@given(st.lists(st.tuples(ACTIONS, st.integers(0, 100)), max_size=12), st.booleans())
def test_no_sequence_reaches_an_illegal_state(steps: list[tuple[str, int]], adult: bool) -> None:
    born = date(1990, 3, 7) if adult else date(2010, 3, 7)
    c = new_customer(born)
    for action, n in steps:
        before = c
        try:
            if action == "approve":
                c, _ = c.approve(today=TODAY, now=NOW)
            elif action == "reject":
                c, _ = c.reject("r", now=NOW)
            elif action == "close":
                c, _ = c.close("r", now=NOW)
            elif action == "risk":
                c, _ = c.assess_risk(n, now=NOW)
            else:
                c, _ = c.update({"mobile": f"139{n:08d}"}, today=TODAY, now=NOW)
        except IllegalTransition as exc:
            assert exc.reason and c is before
            continue
        # every accepted change bumps the version by exactly one (or is a no-op update)
        assert c.version in (before.version, before.version + 1)
        assert before.status not in TERMINAL or c.status == before.status
        # invariants of every reachable state
        assert c.status in Status
        if c.status in (Status.ACTIVE, Status.CLOSED):
            assert c.kyc_verified and adult
        if c.status in (Status.PENDING, Status.REJECTED):
            assert not c.kyc_verified
        if c.risk_tolerance is not None:
            assert c.risk_tolerance_expire_time is not None


def test_domain_enums_are_exactly_the_contracts_values() -> None:
    from bank.customer.v1 import customer_pb2

    contract_status = {k.removeprefix("STATUS_"): v for k, v in customer_pb2.Customer.Status.items() if v}
    assert {m.name: m.value for m in Status} == contract_status
    contract_risk = {k.removeprefix("RISK_TOLERANCE_"): v for k, v in customer_pb2.RiskTolerance.items() if v}
    assert {m.name: m.value for m in RiskTolerance} == contract_risk
