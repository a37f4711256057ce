"""Who may hold a product: customer standing, age range, suitability (适当性), product state.

:func:`eligibility_reasons` returns every failed rule as a code, in the contract's order
(``EligibilityResult.reasons``), empty when eligible. The product service adds its amount
checks after these; the data hub offers a product only if this returns nothing.

Boundaries, decided once for everyone:
- a risk assessment is valid strictly before its expiry time: one expiring exactly *now* is
  expired;
- the age range is inclusive (``min_age <= age <= max_age``; 0 = no bound);
- suitability applies to WEALTH products: a valid tolerance Cn with n >= the product's Rn (equal
  risk is suitable);
- an age that is only known as a range (the data hub sees the birth year, never the date) must
  satisfy the bounds at both ends: a caller that cannot be sure treats the customer as not
  eligible, so the hub never offers what the product service would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from bank.customer.v1 import customer_pb2
from bank.product.v1 import product_pb2

CUSTOMER_NOT_ACTIVE = "CUSTOMER_NOT_ACTIVE"
KYC_NOT_VERIFIED = "KYC_NOT_VERIFIED"
AGE_BELOW_MIN = "AGE_BELOW_MIN"
AGE_ABOVE_MAX = "AGE_ABOVE_MAX"
RISK_TOLERANCE_MISSING = "RISK_TOLERANCE_MISSING"
RISK_TOLERANCE_EXPIRED = "RISK_TOLERANCE_EXPIRED"
RISK_TOLERANCE_TOO_LOW = "RISK_TOLERANCE_TOO_LOW"
PRODUCT_NOT_ACTIVE = "PRODUCT_NOT_ACTIVE"

_ACTIVE_CUSTOMER = customer_pb2.Customer.STATUS_ACTIVE
_WEALTH = product_pb2.Product.TYPE_WEALTH
_ACTIVE_PRODUCT = product_pb2.Product.STATE_ACTIVE


@dataclass(frozen=True)
class Applicant:
    """The customer facts the rule reads (no PII). Times are epoch microseconds."""

    status: int  # bank.customer.v1.Customer.Status
    kyc_verified: bool
    #: Completed years; ``age_low < age_high`` when only a range is known; None when unknown.
    age_low: int | None
    age_high: int | None
    risk_tolerance: int  # 0 = none; 1..5 = C1..C5
    risk_tolerance_expire_us: int | None  # None = never expires


@dataclass(frozen=True)
class Offering:
    """The product facts the rule reads."""

    type: int  # bank.product.v1.Product.Type
    state: int  # bank.product.v1.Product.State
    risk_level: int  # 1..5 = R1..R5
    min_age: int = 0  # 0 = no bound
    max_age: int = 0


def assessment_expired(expire_us: int | None, now_us: int) -> bool:
    """A risk assessment is valid strictly before its expiry time: at that instant it expired."""
    return expire_us is not None and expire_us <= now_us


def tolerance_valid(applicant: Applicant, now_us: int) -> bool:
    """A risk tolerance is on file and not expired."""
    return applicant.risk_tolerance > 0 and not assessment_expired(applicant.risk_tolerance_expire_us, now_us)


def eligibility_reasons(offering: Offering, applicant: Applicant, now_us: int) -> list[str]:
    """Every failed rule's code, in contract order; empty means eligible."""
    reasons: list[str] = []
    if applicant.status != _ACTIVE_CUSTOMER:
        reasons.append(CUSTOMER_NOT_ACTIVE)
    if not applicant.kyc_verified:
        reasons.append(KYC_NOT_VERIFIED)
    if offering.min_age and (applicant.age_low is None or applicant.age_low < offering.min_age):
        reasons.append(AGE_BELOW_MIN)
    if offering.max_age and (applicant.age_high is None or applicant.age_high > offering.max_age):
        reasons.append(AGE_ABOVE_MAX)
    if offering.type == _WEALTH:
        if not applicant.risk_tolerance:
            reasons.append(RISK_TOLERANCE_MISSING)
        else:
            if not tolerance_valid(applicant, now_us):
                reasons.append(RISK_TOLERANCE_EXPIRED)
            if applicant.risk_tolerance < offering.risk_level:
                reasons.append(RISK_TOLERANCE_TOO_LOW)
    if offering.state != _ACTIVE_PRODUCT:
        reasons.append(PRODUCT_NOT_ACTIVE)
    return reasons
