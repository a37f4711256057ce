"""The product capability's rules — pure: no I/O, no gRPC, no SQLAlchemy.

- Catalogue: a product is DRAFT → ACTIVE → RETIRED; its terms are validated on creation and
  can never change afterwards (there is no update: a changed offer is a new product).
- Eligibility: :func:`evaluate_eligibility` returns EVERY failed rule as a :class:`Reason`, in
  the order the contract lists the codes.
- Suitability (适当性): for WEALTH products the customer's risk tolerance Cn must be on file,
  unexpired, and n >= the product's Rn. Other product types carry a risk level for
  disclosure only.
- Postings: :func:`post` computes the balance after a credit/debit; deposits and wealth
  holdings never go below zero (loans and cards may: a drawdown or a card spend is a debit).

Amounts are :class:`services.kit.money.Amount` (integer minor units), never floats.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bank.product.v1 import product_pb2
from services.kit.money import Amount, is_supported  # pure value type: the public face loads I/O
from services.kit.times import epoch_us
from services.policy import eligibility as policy
from services.policy.eligibility import (
    AGE_ABOVE_MAX,
    AGE_BELOW_MIN,
    CUSTOMER_NOT_ACTIVE,
    KYC_NOT_VERIFIED,
    PRODUCT_NOT_ACTIVE,
    RISK_TOLERANCE_EXPIRED,
    RISK_TOLERANCE_MISSING,
    RISK_TOLERANCE_TOO_LOW,
)

Product = product_pb2.Product
Subscription = product_pb2.Subscription
Transaction = product_pb2.Transaction

TYPE_DEPOSIT = Product.TYPE_DEPOSIT
TYPE_LOAN = Product.TYPE_LOAN
TYPE_WEALTH = Product.TYPE_WEALTH
TYPE_CARD = Product.TYPE_CARD

DRAFT, ACTIVE, RETIRED = Product.STATE_DRAFT, Product.STATE_ACTIVE, Product.STATE_RETIRED
OPEN, CLOSED = Subscription.STATE_OPEN, Subscription.STATE_CLOSED
CREDIT, DEBIT = Transaction.DIRECTION_CREDIT, Transaction.DIRECTION_DEBIT

#: A deposit or wealth product paying more than 100 % a year is a typo, not an offer.
MAX_SAVINGS_RATE_BPS = 10_000

# Reason codes of EligibilityResult, in the contract's order (the order they are reported in).
# The customer, age, suitability and product-state rules are the bank-wide policy's
# (services.policy.eligibility, shared with the data hub's offers); the amount checks are ours.
AMOUNT_BELOW_MIN = "AMOUNT_BELOW_MIN"
AMOUNT_ABOVE_MAX = "AMOUNT_ABOVE_MAX"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
REASON_CODES = (
    CUSTOMER_NOT_ACTIVE, KYC_NOT_VERIFIED, AGE_BELOW_MIN, AGE_ABOVE_MAX, RISK_TOLERANCE_MISSING,
    RISK_TOLERANCE_EXPIRED, RISK_TOLERANCE_TOO_LOW, PRODUCT_NOT_ACTIVE, AMOUNT_BELOW_MIN,
    AMOUNT_ABOVE_MAX, CURRENCY_MISMATCH,
)  # fmt: skip
#: The codes of the rules the customer's own facts fail: what the customer service may have
#: changed a moment ago (a KYC approval, a risk assessment), before a replica of them heard it.
CUSTOMER_FACT_CODES = frozenset({
    CUSTOMER_NOT_ACTIVE, KYC_NOT_VERIFIED, AGE_BELOW_MIN, AGE_ABOVE_MAX, RISK_TOLERANCE_MISSING,
    RISK_TOLERANCE_EXPIRED, RISK_TOLERANCE_TOO_LOW,
})  # fmt: skip


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


class DomainError(Exception):
    """A business rule refused a command; ``reason`` is the stable machine-readable code."""

    reason = "RULE_VIOLATED"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidTerms(DomainError):
    """The product's terms or eligibility rules are inconsistent; ``violations`` name the fields."""

    reason = "INVALID_TERMS"

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = violations


class TransitionRefused(DomainError):
    """The aggregate's state does not allow this transition."""


class InsufficientFunds(DomainError):
    """A debit would take a deposit or wealth holding below zero."""

    reason = "INSUFFICIENT_FUNDS"


class CurrencyMismatch(DomainError):
    """An amount is not in the currency of the product or subscription."""

    reason = "CURRENCY_MISMATCH"


# ------------------------------------------------------------------------------------------
# catalogue
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """Commercial terms; ``min``/``max`` are None when unbounded."""

    currency: str
    min: Amount | None
    max: Amount | None
    term_months: int
    annual_rate_bps: int


@dataclass(frozen=True)
class Rules:
    """Product-specific eligibility: an age range (0 = no bound)."""

    min_age: int = 0
    max_age: int = 0


@dataclass(frozen=True)
class ProductFacts:
    """What eligibility needs to know about a product."""

    product_id: str
    type: int
    risk_level: int
    state: int
    terms: Terms
    rules: Rules


def terms_violations(product_type: int, terms: Terms, rules: Rules) -> list[tuple[str, str]]:
    """Cross-field checks protovalidate cannot express, as (field path, description)."""
    found: list[tuple[str, str]] = []
    prefix = "product.terms"
    if not is_supported(terms.currency):
        found.append((f"{prefix}.currency_code", f"unsupported currency {terms.currency!r}"))
    for name, bound in (("min_amount", terms.min), ("max_amount", terms.max)):
        if bound is not None and bound.currency != terms.currency:
            found.append((f"{prefix}.{name}.currency_code", f"must be the terms currency {terms.currency}"))
    if (
        terms.min is not None
        and terms.max is not None
        and terms.min.currency == terms.max.currency
        and terms.min > terms.max
    ):
        found.append((f"{prefix}.max_amount", "must not be below min_amount"))
    if product_type == TYPE_LOAN and terms.term_months < 1:
        found.append((f"{prefix}.term_months", "a loan needs a term of at least 1 month"))
    if product_type == TYPE_CARD and terms.term_months != 0:
        found.append((f"{prefix}.term_months", "a card is open-ended: term_months must be 0"))
    if product_type == TYPE_LOAN and terms.annual_rate_bps <= 0:
        found.append((f"{prefix}.annual_rate_bps", "a loan needs a positive rate"))
    if product_type in (TYPE_DEPOSIT, TYPE_WEALTH) and terms.annual_rate_bps > MAX_SAVINGS_RATE_BPS:
        found.append((f"{prefix}.annual_rate_bps", f"must not exceed {MAX_SAVINGS_RATE_BPS} bps for this type"))
    if rules.max_age and rules.min_age > rules.max_age:
        found.append(("product.eligibility.max_age", "must not be below min_age"))
    return found


def validate_terms(product_type: int, terms: Terms, rules: Rules) -> None:
    """Raise :class:`InvalidTerms` naming every inconsistent field."""
    found = terms_violations(product_type, terms, rules)
    if found:
        raise InvalidTerms(found)


def publish(state: int) -> int:
    """DRAFT → ACTIVE (the terms are frozen from here on)."""
    if state != DRAFT:
        raise TransitionRefused("only a DRAFT product can be published", reason="PRODUCT_NOT_DRAFT")
    return ACTIVE


def retire(state: int) -> int:
    """ACTIVE → RETIRED (open subscriptions stay open)."""
    if state != ACTIVE:
        raise TransitionRefused("only an ACTIVE product can be retired", reason="PRODUCT_NOT_ACTIVE")
    return RETIRED


# ------------------------------------------------------------------------------------------
# eligibility and suitability
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerProfile:
    """The customer facts eligibility needs (no PII), from the customer service."""

    customer_id: str
    status: int
    kyc_verified: bool
    age_years: int
    risk_tolerance: int  # 0 = none; 1..5 = C1..C5
    risk_tolerance_expire_time: datetime | None


@dataclass(frozen=True)
class Reason:
    """A failed eligibility rule: its code, the sentence (en) and the same in Chinese (zh-CN)."""

    code: str
    message: str
    message_zh: str = ""


def evaluate_eligibility(
    product: ProductFacts, customer: CustomerProfile, amount: Amount | None, now: datetime
) -> list[Reason]:
    """Every failed rule, in contract order; empty means eligible: the bank-wide policy's rules
    (:mod:`services.policy.eligibility`), then the amount against the product's terms."""
    expires = customer.risk_tolerance_expire_time
    applicant = policy.Applicant(
        status=customer.status,
        kyc_verified=customer.kyc_verified,
        age_low=customer.age_years,
        age_high=customer.age_years,
        risk_tolerance=customer.risk_tolerance,
        risk_tolerance_expire_us=None if expires is None else epoch_us(expires),
    )
    rules = product.rules
    offering = policy.Offering(
        type=product.type, state=product.state, risk_level=product.risk_level,
        min_age=rules.min_age, max_age=rules.max_age,
    )  # fmt: skip
    reasons = [
        Reason(code, *_explain(code, product, customer))
        for code in policy.eligibility_reasons(offering, applicant, epoch_us(now))
    ]
    if amount is not None:
        reasons.extend(_amount_reasons(product.terms, amount))
    return reasons


@dataclass(frozen=True)
class ReplicatedFacts:
    """A customer's eligibility facts as the product's replica holds them (customer events,
    ``services/product/replica.py``): the birth YEAR, never the date, so the age is a range."""

    customer_id: str
    status: int
    kyc_verified: bool
    birth_year: int  # 0 = not known
    risk_tolerance: int
    risk_tolerance_expire_time: datetime | None


def possible_ages(birth_year: int, now: datetime) -> tuple[int, int]:
    """The customer's age in whole years today, known only as a range from the birth year.

    The customer service counts the age on its business calendar's date (``ZT_BUSINESS_TIMEZONE``,
    not known here): that date's year is today's year somewhere on Earth (UTC−12 … UTC+14), and
    in a year Y a person born in year B is B−Y−1 before the birthday and Y−B from it on. So two
    values (Y−B−1, Y−B), or three in the hours around New Year."""
    years = ((now - timedelta(hours=12)).year, (now + timedelta(hours=14)).year)
    return years[0] - birth_year - 1, years[1] - birth_year


def evaluate_if_certain(
    product: ProductFacts, customer: ReplicatedFacts, amount: Amount | None, now: datetime
) -> list[Reason] | None:
    """:func:`evaluate_eligibility`'s answer when every age the birth year allows gives the same
    answer; None when it does not (near an age bound) or the birth year is not known: then only
    the customer service, which knows the date, can tell.

    The same rules decide, applied at both ends of the age range: the age rules are bounds
    (``min_age <= age <= max_age``), so two ends that agree agree with every age between them."""
    if customer.birth_year <= 0:
        return None
    low, high = possible_ages(customer.birth_year, now)
    profile = CustomerProfile(
        customer_id=customer.customer_id, status=customer.status, kyc_verified=customer.kyc_verified,
        age_years=low, risk_tolerance=customer.risk_tolerance,
        risk_tolerance_expire_time=customer.risk_tolerance_expire_time,
    )  # fmt: skip
    youngest = evaluate_eligibility(product, profile, amount, now)
    oldest = evaluate_eligibility(product, replace(profile, age_years=high), amount, now)
    return youngest if youngest == oldest else None


def _explain(code: str, product: ProductFacts, customer: CustomerProfile) -> tuple[str, str]:
    """The channel-facing sentence of a failed rule, in English and in Chinese."""
    if code == AGE_BELOW_MIN:
        low = product.rules.min_age
        return f"the product requires an age of at least {low}", f"该产品要求年龄不低于 {low} 岁"
    if code == AGE_ABOVE_MAX:
        high = product.rules.max_age
        return f"the product requires an age of at most {high}", f"该产品要求年龄不高于 {high} 岁"
    if code == RISK_TOLERANCE_TOO_LOW:
        have, need = customer.risk_tolerance, product.risk_level
        return (
            f"risk tolerance C{have} is below the product's risk level R{need}",
            f"客户风险承受能力 C{have} 低于产品风险等级 R{need}",
        )
    return _MESSAGES[code]


_MESSAGES = {
    CUSTOMER_NOT_ACTIVE: ("the customer is not active", "客户状态不是正常（已激活）"),
    KYC_NOT_VERIFIED: ("the customer's identity is not verified (KYC)", "客户身份尚未核验（KYC）"),
    RISK_TOLERANCE_MISSING: ("no risk assessment on file", "客户尚无风险测评记录"),
    RISK_TOLERANCE_EXPIRED: ("the risk assessment has expired; reassess", "风险测评已过期，请重新测评"),
    PRODUCT_NOT_ACTIVE: ("the product is not on offer", "该产品当前不在售"),
}


def fixed_reason(code: str) -> Reason:
    """A refusal whose sentence needs no facts (e.g. PRODUCT_NOT_ACTIVE)."""
    return Reason(code, *_MESSAGES[code])


def _amount_reasons(terms: Terms, amount: Amount) -> list[Reason]:
    if amount.currency != terms.currency:
        return [Reason(CURRENCY_MISMATCH, f"the product is in {terms.currency}", f"该产品的币种为 {terms.currency}")]
    found: list[Reason] = []
    if terms.min is not None and amount < terms.min:
        found.append(Reason(AMOUNT_BELOW_MIN, f"the minimum amount is {terms.min}", f"最低金额为 {terms.min}"))
    if terms.max is not None and amount > terms.max:
        found.append(Reason(AMOUNT_ABOVE_MAX, f"the maximum amount is {terms.max}", f"最高金额为 {terms.max}"))
    return found


# ------------------------------------------------------------------------------------------
# subscriptions and postings
# ------------------------------------------------------------------------------------------


def close(state: int) -> int:
    """OPEN → CLOSED."""
    if state != OPEN:
        raise TransitionRefused("the subscription is not open", reason="SUBSCRIPTION_NOT_OPEN")
    return CLOSED


def may_go_negative(product_type: int) -> bool:
    """Loans (drawdowns) and cards (spending) may run a negative balance; deposits and wealth never."""
    return product_type in (TYPE_LOAN, TYPE_CARD)


def signed(direction: int, amount: Amount) -> Amount:
    """The balance change of a posting: +amount for a credit, -amount for a debit."""
    if direction == CREDIT:
        return amount
    if direction == DEBIT:
        return -amount
    raise ValueError("direction must be CREDIT or DEBIT")


def post(balance: Amount, direction: int, amount: Amount, product_type: int, state: int = OPEN) -> Amount:
    """The balance after posting; refuses closed subscriptions, foreign currency and overdrafts."""
    if state != OPEN:
        raise TransitionRefused("the subscription is not open", reason="SUBSCRIPTION_NOT_OPEN")
    if amount.currency != balance.currency:
        raise CurrencyMismatch(f"the subscription is in {balance.currency}")
    if not amount.is_positive:
        raise ValueError("a posting amount must be positive")
    after = balance + signed(direction, amount)
    if after.is_negative and not may_go_negative(product_type):
        raise InsufficientFunds("the debit exceeds the available balance")
    return after
