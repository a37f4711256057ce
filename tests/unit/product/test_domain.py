"""Product rules: terms validation, lifecycle, every eligibility reason code, postings."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bank.customer.v1 import customer_pb2
from services.kit.money import Amount
from services.product import domain as d

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ACTIVE_CUSTOMER = customer_pb2.Customer.STATUS_ACTIVE


def cny(minor: int) -> Amount:
    return Amount(minor, "CNY")


def terms(**kw: object) -> d.Terms:
    base = {"currency": "CNY", "min": cny(100_00), "max": cny(1_000_000_00), "term_months": 12, "annual_rate_bps": 275}
    base.update(kw)
    return d.Terms(**base)  # type: ignore[arg-type]


def product(type_: int = d.TYPE_WEALTH, risk: int = 3, state: int = d.ACTIVE, **kw: object) -> d.ProductFacts:
    return d.ProductFacts("P-1", type_, risk, state, kw.pop("t", terms()), kw.pop("rules", d.Rules()))  # type: ignore[arg-type]


def customer(**kw: object) -> d.CustomerProfile:
    base = {
        "customer_id": "C-1",
        "status": ACTIVE_CUSTOMER,
        "kyc_verified": True,
        "age_years": 35,
        "risk_tolerance": 4,
        "risk_tolerance_expire_time": NOW + timedelta(days=300),
    }
    base.update(kw)
    return d.CustomerProfile(**base)  # type: ignore[arg-type]


def codes(reasons: list[d.Reason]) -> list[str]:
    return [r.code for r in reasons]


# --- terms -------------------------------------------------------------------------------


def test_consistent_terms_pass() -> None:
    d.validate_terms(d.TYPE_DEPOSIT, terms(), d.Rules(18, 65))
    d.validate_terms(d.TYPE_CARD, terms(term_months=0, min=None, max=None), d.Rules())


@pytest.mark.parametrize(
    ("type_", "t", "rules", "field"),
    [
        (d.TYPE_DEPOSIT, terms(currency="XYZ", min=None, max=None), d.Rules(), "product.terms.currency_code"),
        (d.TYPE_DEPOSIT, terms(min=Amount(1, "USD")), d.Rules(), "product.terms.min_amount.currency_code"),
        (d.TYPE_DEPOSIT, terms(max=Amount(1, "USD")), d.Rules(), "product.terms.max_amount.currency_code"),
        (d.TYPE_DEPOSIT, terms(min=cny(500), max=cny(499)), d.Rules(), "product.terms.max_amount"),
        (d.TYPE_LOAN, terms(term_months=0), d.Rules(), "product.terms.term_months"),
        (d.TYPE_CARD, terms(term_months=12), d.Rules(), "product.terms.term_months"),
        (d.TYPE_LOAN, terms(annual_rate_bps=0), d.Rules(), "product.terms.annual_rate_bps"),
        (d.TYPE_DEPOSIT, terms(annual_rate_bps=10_001), d.Rules(), "product.terms.annual_rate_bps"),
        (d.TYPE_WEALTH, terms(), d.Rules(min_age=60, max_age=30), "product.eligibility.max_age"),
    ],
)
def test_inconsistent_terms_name_the_field(type_: int, t: d.Terms, rules: d.Rules, field: str) -> None:
    with pytest.raises(d.InvalidTerms) as info:
        d.validate_terms(type_, t, rules)
    assert [f for f, _ in info.value.violations] == [field]


def test_min_equal_to_max_is_allowed() -> None:
    d.validate_terms(d.TYPE_DEPOSIT, terms(min=cny(500), max=cny(500)), d.Rules())


def test_every_bad_term_is_reported_at_once() -> None:
    with pytest.raises(d.InvalidTerms) as info:
        d.validate_terms(d.TYPE_LOAN, terms(term_months=0, annual_rate_bps=0), d.Rules(50, 40))
    assert len(info.value.violations) == 3


# --- lifecycle ---------------------------------------------------------------------------


def test_product_lifecycle_is_draft_active_retired() -> None:
    assert d.publish(d.DRAFT) == d.ACTIVE
    assert d.retire(d.ACTIVE) == d.RETIRED


@pytest.mark.parametrize("state", [d.ACTIVE, d.RETIRED])
def test_only_a_draft_can_be_published(state: int) -> None:
    with pytest.raises(d.TransitionRefused) as info:
        d.publish(state)
    assert info.value.reason == "PRODUCT_NOT_DRAFT"


@pytest.mark.parametrize("state", [d.DRAFT, d.RETIRED])
def test_only_an_active_product_can_be_retired(state: int) -> None:
    with pytest.raises(d.TransitionRefused):
        d.retire(state)


def test_a_closed_subscription_cannot_be_closed_again() -> None:
    assert d.close(d.OPEN) == d.CLOSED
    with pytest.raises(d.TransitionRefused) as info:
        d.close(d.CLOSED)
    assert info.value.reason == "SUBSCRIPTION_NOT_OPEN"


# --- eligibility: one test per reason code -------------------------------------------------


def test_a_suitable_active_customer_is_eligible() -> None:
    assert d.evaluate_eligibility(product(), customer(), cny(1000_00), NOW) == []


@pytest.mark.parametrize(
    ("prod", "cust", "amount", "code"),
    [
        (product(), customer(status=customer_pb2.Customer.STATUS_PENDING), None, d.CUSTOMER_NOT_ACTIVE),
        (product(), customer(kyc_verified=False), None, d.KYC_NOT_VERIFIED),
        (product(rules=d.Rules(min_age=40)), customer(age_years=39), None, d.AGE_BELOW_MIN),
        (product(rules=d.Rules(max_age=60)), customer(age_years=61), None, d.AGE_ABOVE_MAX),
        (product(), customer(risk_tolerance=0, risk_tolerance_expire_time=None), None, d.RISK_TOLERANCE_MISSING),
        (product(), customer(risk_tolerance_expire_time=NOW), None, d.RISK_TOLERANCE_EXPIRED),
        (product(risk=4), customer(risk_tolerance=2), None, d.RISK_TOLERANCE_TOO_LOW),
        (product(state=d.DRAFT), customer(), None, d.PRODUCT_NOT_ACTIVE),
        (product(state=d.RETIRED), customer(), None, d.PRODUCT_NOT_ACTIVE),
        (product(), customer(), cny(99_99), d.AMOUNT_BELOW_MIN),
        (product(), customer(), cny(1_000_000_01), d.AMOUNT_ABOVE_MAX),
        (product(), customer(), Amount(100_00, "USD"), d.CURRENCY_MISMATCH),
    ],
)
def test_each_failed_rule_has_its_reason_code(
    prod: d.ProductFacts, cust: d.CustomerProfile, amount: Amount | None, code: str
) -> None:
    assert codes(d.evaluate_eligibility(prod, cust, amount, NOW)) == [code]


def test_age_bounds_are_inclusive() -> None:
    rules = d.Rules(min_age=18, max_age=60)
    assert d.evaluate_eligibility(product(rules=rules), customer(age_years=18), None, NOW) == []
    assert d.evaluate_eligibility(product(rules=rules), customer(age_years=60), None, NOW) == []


def test_suitability_r4_product_refuses_a_c2_customer_but_accepts_c4_and_c5() -> None:
    r4 = product(risk=4)
    assert codes(d.evaluate_eligibility(r4, customer(risk_tolerance=2), None, NOW)) == [d.RISK_TOLERANCE_TOO_LOW]
    assert d.evaluate_eligibility(r4, customer(risk_tolerance=4), None, NOW) == []
    assert d.evaluate_eligibility(r4, customer(risk_tolerance=5), None, NOW) == []


def test_suitability_applies_to_wealth_products_only() -> None:
    deposit = product(type_=d.TYPE_DEPOSIT, risk=1)
    assert d.evaluate_eligibility(deposit, customer(risk_tolerance=0, risk_tolerance_expire_time=None), None, NOW) == []


def test_a_missing_assessment_is_not_also_reported_as_too_low() -> None:
    got = d.evaluate_eligibility(
        product(risk=5), customer(risk_tolerance=0, risk_tolerance_expire_time=None), None, NOW
    )
    assert codes(got) == [d.RISK_TOLERANCE_MISSING]


def test_every_failed_rule_is_reported_in_contract_order() -> None:
    bad = customer(
        status=customer_pb2.Customer.STATUS_CLOSED,
        kyc_verified=False,
        age_years=70,
        risk_tolerance=1,
        risk_tolerance_expire_time=NOW - timedelta(days=1),
    )
    got = codes(d.evaluate_eligibility(product(risk=5, state=d.RETIRED, rules=d.Rules(max_age=65)), bad, cny(1), NOW))
    assert got == [
        d.CUSTOMER_NOT_ACTIVE,
        d.KYC_NOT_VERIFIED,
        d.AGE_ABOVE_MAX,
        d.RISK_TOLERANCE_EXPIRED,
        d.RISK_TOLERANCE_TOO_LOW,
        d.PRODUCT_NOT_ACTIVE,
        d.AMOUNT_BELOW_MIN,
    ]
    assert got == sorted(got, key=d.REASON_CODES.index)


def test_unbounded_terms_accept_any_amount() -> None:
    open_ended = product(t=terms(min=None, max=None))
    assert d.evaluate_eligibility(open_ended, customer(), cny(1), NOW) == []
    assert d.evaluate_eligibility(replace(open_ended), customer(), cny(10**15), NOW) == []


# --- postings ------------------------------------------------------------------------------


def test_credit_and_debit_move_the_balance() -> None:
    assert d.post(cny(100), d.CREDIT, cny(50), d.TYPE_DEPOSIT) == cny(150)
    assert d.post(cny(100), d.DEBIT, cny(100), d.TYPE_DEPOSIT) == cny(0)


@pytest.mark.parametrize("type_", [d.TYPE_DEPOSIT, d.TYPE_WEALTH])
def test_debit_beyond_balance_is_refused_for_deposits_and_wealth(type_: int) -> None:
    with pytest.raises(d.InsufficientFunds):
        d.post(cny(100), d.DEBIT, cny(101), type_)


@pytest.mark.parametrize("type_", [d.TYPE_LOAN, d.TYPE_CARD])
def test_loans_and_cards_may_go_negative(type_: int) -> None:
    assert d.post(cny(0), d.DEBIT, cny(500), type_) == cny(-500)


def test_posting_to_a_closed_subscription_or_in_another_currency_is_refused() -> None:
    with pytest.raises(d.TransitionRefused):
        d.post(cny(100), d.CREDIT, cny(1), d.TYPE_DEPOSIT, state=d.CLOSED)
    with pytest.raises(d.CurrencyMismatch):
        d.post(cny(100), d.CREDIT, Amount(1, "USD"), d.TYPE_DEPOSIT)
