"""One eligibility rule, every place that evaluates it: a table of boundary cases.

The product service decides with it whether a customer may open a product
(``services.product.domain.evaluate_eligibility``); the data hub whether it may offer one
(``services.data_hub.domain.next_best_offers``) and whether an assessment has expired (churn
reason ``RISK_TOLERANCE_EXPIRED``). Both call ``services.policy.eligibility``; this table pins
the boundaries for both, so a third caller is added here too.

The hub knows the birth year only (events never carry the birth date): at an age bound in the
birthday year it cannot tell 17 from 18 and does not offer (``hub`` column), so it never offers
what the product service would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bank.customer.v1 import customer_pb2
from bank.product.v1 import product_pb2
from services.data_hub import domain as hub
from services.product import domain as product

NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp()) * 1_000_000
ACTIVE, CLOSED = customer_pb2.Customer.STATUS_ACTIVE, customer_pb2.Customer.STATUS_CLOSED
WEALTH, DEPOSIT = product_pb2.Product.TYPE_WEALTH, product_pb2.Product.TYPE_DEPOSIT
ON_OFFER, RETIRED = product_pb2.Product.STATE_ACTIVE, product_pb2.Product.STATE_RETIRED


@dataclass(frozen=True)
class Case:
    name: str
    codes: list[str]  # what the product service reports (in contract order); [] = eligible
    hub: bool | None = None  # does the hub offer it; None = exactly when eligible
    customer: dict[str, Any] = field(default_factory=dict)
    offering: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("eligible", []),
    Case("assessment expiring exactly now is expired", ["RISK_TOLERANCE_EXPIRED"], customer={"expires": NOW}),
    Case("assessment expiring a microsecond later is valid", [], customer={"expires": NOW + timedelta(microseconds=1)}),
    Case("assessment expired a second ago", ["RISK_TOLERANCE_EXPIRED"],
         customer={"expires": NOW - timedelta(seconds=1)}),
    Case("equal risk is suitable", [], customer={"tolerance": 3}, offering={"risk_level": 3}),
    Case("higher tolerance is suitable", [], customer={"tolerance": 5}, offering={"risk_level": 3}),
    Case("lower tolerance is not", ["RISK_TOLERANCE_TOO_LOW"], customer={"tolerance": 2}, offering={"risk_level": 3}),
    Case("no assessment for wealth", ["RISK_TOLERANCE_MISSING"], customer={"tolerance": 0, "expires": None}),
    Case("no assessment needed for a deposit", [], customer={"tolerance": 0, "expires": None},
         offering={"type": DEPOSIT}),
    Case("expired assessment does not matter for a deposit", [], customer={"expires": NOW},
         offering={"type": DEPOSIT}),
    Case("exactly the minimum age", [], hub=False, customer={"born": date(2007, 6, 30)}, offering={"min_age": 18}),
    Case("a day below the minimum age", ["AGE_BELOW_MIN"], customer={"born": date(2007, 7, 1)},
         offering={"min_age": 18}),
    Case("a year past the minimum age", [], customer={"born": date(2006, 7, 1)}, offering={"min_age": 18}),
    Case("exactly the maximum age", [], customer={"born": date(1965, 6, 30)}, offering={"max_age": 60}),
    Case("the maximum age until the next birthday", [], customer={"born": date(1964, 7, 1)},
         offering={"max_age": 60}, hub=False),
    Case("past the maximum age", ["AGE_ABOVE_MAX"], customer={"born": date(1964, 6, 30)}, offering={"max_age": 60}),
    Case("closed customer", ["CUSTOMER_NOT_ACTIVE"], customer={"status": CLOSED}),
    Case("identity not verified", ["KYC_NOT_VERIFIED"], customer={"kyc": False}),
    Case("retired product", ["PRODUCT_NOT_ACTIVE"], offering={"state": RETIRED}),
    Case("every failure at once, in contract order",
         ["CUSTOMER_NOT_ACTIVE", "KYC_NOT_VERIFIED", "AGE_BELOW_MIN", "RISK_TOLERANCE_EXPIRED",
          "RISK_TOLERANCE_TOO_LOW", "PRODUCT_NOT_ACTIVE"],
         customer={"status": CLOSED, "kyc": False, "born": date(2010, 1, 1), "tolerance": 1, "expires": NOW},
         offering={"min_age": 18, "risk_level": 5, "state": RETIRED}),
]  # fmt: skip


def _customer(overrides: dict[str, Any]) -> dict[str, Any]:
    c = {"status": ACTIVE, "kyc": True, "born": date(1990, 1, 15), "tolerance": 3,
         "expires": NOW + timedelta(days=200)}  # fmt: skip
    c.update(overrides)
    return c


def _offering(overrides: dict[str, Any]) -> dict[str, Any]:
    o = {"type": WEALTH, "state": ON_OFFER, "risk_level": 3, "min_age": 0, "max_age": 0}
    o.update(overrides)
    return o


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def product_codes(case: Case) -> list[str]:
    c, o = _customer(case.customer), _offering(case.offering)
    profile = product.CustomerProfile(
        customer_id="c1", status=c["status"], kyc_verified=c["kyc"], age_years=_age(c["born"], NOW.date()),
        risk_tolerance=c["tolerance"], risk_tolerance_expire_time=c["expires"],
    )  # fmt: skip
    facts = product.ProductFacts(
        product_id="p1", type=o["type"], risk_level=o["risk_level"], state=o["state"],
        terms=product.Terms(currency="CNY", min=None, max=None, term_months=12, annual_rate_bps=300),
        rules=product.Rules(min_age=o["min_age"], max_age=o["max_age"]),
    )  # fmt: skip
    return [r.code for r in product.evaluate_eligibility(facts, profile, None, NOW)]


def _hub_facts(case: Case) -> hub.CustomerFacts:
    c = _customer(case.customer)
    expires = c["expires"]
    return hub.CustomerFacts(
        customer_id="c1", registered=True, status=c["status"], kyc_verified=c["kyc"],
        risk_tolerance=c["tolerance"],
        risk_tolerance_expire_us=None if expires is None else round(expires.timestamp() * 1_000_000),
        birth_year=c["born"].year, create_us=NOW_US - 400 * hub.DAY_US, as_of_us=NOW_US,
    )  # fmt: skip


def hub_offers(case: Case) -> bool:
    o = _offering(case.offering)
    catalogue = [hub.Product(product_id="p1", display_name="P", type=o["type"], risk_level=o["risk_level"],
                             state=o["state"], min_age=o["min_age"], max_age=o["max_age"])]  # fmt: skip
    offers = hub.next_best_offers(_hub_facts(case), hub.SEGMENT_LONG_TAIL, catalogue, hub.Rules())
    return [offer.product_id for offer in offers] == ["p1"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_product_service_applies_the_rule(case: Case) -> None:
    assert product_codes(case) == case.codes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_data_hub_offers_only_what_the_rule_allows(case: Case) -> None:
    expected = (not case.codes) if case.hub is None else case.hub
    assert hub_offers(case) is expected
    assert not (hub_offers(case) and case.codes), "the hub must never offer what would be refused"


EXPIRY = [c for c in CASES if "expires" in c.customer and c.customer.get("tolerance", 3) and "status" not in c.customer]


@pytest.mark.parametrize("case", EXPIRY, ids=lambda c: c.name)
def test_the_data_hub_and_the_product_service_agree_on_expiry(case: Case) -> None:
    """The churn reason RISK_TOLERANCE_EXPIRED and the eligibility reason share the boundary."""
    churn = hub.churn_risk(_hub_facts(case), hub.Rules())
    wealth = Case(case.name, [], customer=case.customer, offering={"type": WEALTH, "risk_level": 1})
    assert ("RISK_TOLERANCE_EXPIRED" in churn.reasons) is ("RISK_TOLERANCE_EXPIRED" in product_codes(wealth))
