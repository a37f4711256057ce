"""The customer (party) domain: rules, the lifecycle state machine and the events it emits.

Pure: standard library only, no I/O. Every change returns a NEW immutable :class:`Customer`
(version + 1) together with the event describing it; illegal changes raise
:class:`IllegalTransition` (→ FAILED_PRECONDITION with a reason) and bad data raises
:class:`ValidationFailed` (→ INVALID_ARGUMENT naming every field).

Lifecycle::

    PENDING --approve (adult, KYC ok)--> ACTIVE --close--> CLOSED
    PENDING --reject-------------------> REJECTED

CLOSED and REJECTED are terminal. Personal data may change (UpdateCustomer) and risk may be
assessed while PENDING or ACTIVE.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from bank.customer.v1 import customer_pb2

ADULT_AGE = 18
MAX_AGE = 150
MIN_BIRTH_YEAR = 1900
NAME_MAX_LEN = 100
EMAIL_MAX_LEN = 254
DEFAULT_RISK_VALIDITY = timedelta(days=365)

# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


_Customer = customer_pb2.Customer


class Status(enum.IntEnum):
    """bank.customer.v1.Customer.Status, the values taken from the generated contract."""

    PENDING = _Customer.STATUS_PENDING
    ACTIVE = _Customer.STATUS_ACTIVE
    CLOSED = _Customer.STATUS_CLOSED
    REJECTED = _Customer.STATUS_REJECTED


class RiskTolerance(enum.IntEnum):
    """bank.customer.v1.RiskTolerance (from the generated contract); C1 is the most conservative."""

    C1 = customer_pb2.RISK_TOLERANCE_C1
    C2 = customer_pb2.RISK_TOLERANCE_C2
    C3 = customer_pb2.RISK_TOLERANCE_C3
    C4 = customer_pb2.RISK_TOLERANCE_C4
    C5 = customer_pb2.RISK_TOLERANCE_C5


TERMINAL = frozenset({Status.CLOSED, Status.REJECTED})
MODIFIABLE = frozenset({Status.PENDING, Status.ACTIVE})

#: (from, action) -> to: the only status changes there are.
TRANSITIONS: Mapping[tuple[Status, str], Status] = {
    (Status.PENDING, "approve"): Status.ACTIVE,
    (Status.PENDING, "reject"): Status.REJECTED,
    (Status.ACTIVE, "close"): Status.CLOSED,
}

UPDATABLE_FIELDS = ("full_name", "birth_date", "mobile", "email")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One bad field (proto field name), why (never the value), and the rule's id (UPPER_SNAKE)."""

    field: str
    description: str
    reason: str = "INVALID_VALUE"


class DomainError(Exception):
    """Base of the domain's errors."""


class ValidationFailed(DomainError):
    """The data breaks a rule; ``violations`` name every offending field."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


class IllegalTransition(DomainError):
    """The customer's status does not allow the operation; ``reason`` is a stable code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Validators (each returns the violations, empty when valid)
# --------------------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"
#: GB/T 2260 province-level codes (first two digits of a resident ID).
PROVINCE_CODES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
     50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
)  # fmt: skip
_ID_FORMAT = re.compile(r"^[0-9]{17}[0-9X]$")
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_NAME_PUNCTUATION = frozenset(" ·•.-'")


def id_check_char(first17: str) -> str:
    """GB 11643 check character of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def birth_date_in_id(national_id: str) -> date | None:
    """The birth date encoded in positions 7..14, or None when it is not a calendar date."""
    try:
        return date(int(national_id[6:10]), int(national_id[10:12]), int(national_id[12:14]))
    except ValueError:
        return None


def validate_national_id(national_id: str, *, today: date) -> list[Violation]:
    """Mainland resident ID: 18 chars, known province, real birth date, GB 11643 check digit."""
    where = "national_id"
    if not _ID_FORMAT.match(national_id):
        return [Violation(where, "must be 17 digits followed by a digit or X", "NATIONAL_ID_FORMAT")]
    if int(national_id[:2]) not in PROVINCE_CODES:
        return [Violation(where, "region code is not a known province", "NATIONAL_ID_REGION")]
    born = birth_date_in_id(national_id)
    if born is None or born.year < MIN_BIRTH_YEAR or born > today:
        return [Violation(where, "embedded birth date is not a valid past date", "NATIONAL_ID_BIRTH_DATE")]
    if id_check_char(national_id[:17]) != national_id[17]:
        return [Violation(where, "check digit does not match (GB 11643)", "NATIONAL_ID_CHECK_DIGIT")]
    return []


def validate_full_name(name: str) -> list[Violation]:
    where = "full_name"
    stripped = name.strip()
    if not stripped:
        return [Violation(where, "must not be empty", "REQUIRED")]
    if len(stripped) > NAME_MAX_LEN:
        return [Violation(where, f"must be at most {NAME_MAX_LEN} characters", "NAME_TOO_LONG")]
    if stripped != name:
        return [Violation(where, "must not start or end with spaces", "NAME_SPACES")]
    for char in name:
        category = unicodedata.category(char)
        if not (category[0] in ("L", "M") or char in _NAME_PUNCTUATION):
            return [Violation(where, "may contain only letters, spaces and · . - '", "NAME_CHARACTERS")]
    if not any(unicodedata.category(c).startswith("L") for c in name):
        return [Violation(where, "must contain a letter", "NAME_CHARACTERS")]
    return []


def validate_birth_date(born: date, *, today: date) -> list[Violation]:
    where = "birth_date"
    if born.year < MIN_BIRTH_YEAR:
        return [Violation(where, f"must be in {MIN_BIRTH_YEAR} or later", "BIRTH_DATE_RANGE")]
    if born > today:
        return [Violation(where, "must not be in the future", "BIRTH_DATE_RANGE")]
    if age_on(born, today) > MAX_AGE:
        return [Violation(where, f"implies an age above {MAX_AGE}", "BIRTH_DATE_RANGE")]
    return []


def validate_mobile(mobile: str) -> list[Violation]:
    if not _MOBILE.match(mobile):
        return [Violation("mobile", "must be an 11-digit mainland mobile number starting 13..19", "MOBILE_FORMAT")]
    return []


def validate_email(email: str) -> list[Violation]:
    """Optional: '' is valid (no e-mail)."""
    if not email:
        return []
    if len(email) > EMAIL_MAX_LEN or not _EMAIL.match(email):
        return [Violation("email", "must be a valid e-mail address", "EMAIL_FORMAT")]
    return []


def age_on(born: date, today: date) -> int:
    """Age in whole years on ``today``."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


@dataclass(frozen=True)
class EligibilityFacts:
    """A customer's PII-free facts for product eligibility, and the birth date the age comes from."""

    customer_id: str
    status: Status
    kyc_verified: bool
    birth_date: date
    risk_tolerance: RiskTolerance | None
    risk_tolerance_expire_time: datetime | None
    version: int

    def age_on(self, today: date) -> int:
        return age_on(self.birth_date, today)


def risk_tolerance_for(score: int) -> RiskTolerance:
    """Questionnaire score → C1 0–20, C2 21–40, C3 41–60, C4 61–80, C5 81–100."""
    if not 0 <= score <= 100:
        raise ValidationFailed([Violation("questionnaire_score", "must be between 0 and 100", "SCORE_RANGE")])
    if score <= 20:
        return RiskTolerance.C1
    return RiskTolerance(min(5, (score - 1) // 20 + 1))


# --------------------------------------------------------------------------------------------
# The aggregate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonalData:
    """The customer's PII (clear text in memory only; encrypted by the store)."""

    full_name: str
    birth_date: date
    national_id: str
    mobile: str
    email: str = ""

    def __repr__(self) -> str:  # never print PII by accident (logs, tracebacks, pytest output)
        return "PersonalData(<redacted>)"


def validate_personal(data: PersonalData, *, today: date) -> list[Violation]:
    found = [
        *validate_full_name(data.full_name),
        *validate_birth_date(data.birth_date, today=today),
        *validate_national_id(data.national_id, today=today),
        *validate_mobile(data.mobile),
        *validate_email(data.email),
    ]
    checkable = not any(v.field in ("birth_date", "national_id") for v in found)
    if checkable and birth_date_in_id(data.national_id) != data.birth_date:
        found.append(Violation("birth_date", "does not match the birth date in national_id", "BIRTH_DATE_MISMATCH"))
    return found


@dataclass(frozen=True)
class Customer:
    customer_id: str
    personal: PersonalData
    status: Status
    kyc_verified: bool
    version: int
    create_time: datetime
    update_time: datetime
    risk_tolerance: RiskTolerance | None = None
    risk_tolerance_expire_time: datetime | None = None

    def age_on(self, today: date) -> int:
        return age_on(self.personal.birth_date, today)

    def _changed(self, now: datetime, **changes: object) -> Customer:
        return replace(self, version=self.version + 1, update_time=now, **changes)  # type: ignore[arg-type]

    def _transition(self, action: str, verb: str) -> Status:
        target = TRANSITIONS.get((self.status, action))
        if target is None:
            allowed = sorted(s.name for (s, a) in TRANSITIONS if a == action)
            raise IllegalTransition(
                f"cannot {verb} a customer in status {self.status.name} (allowed from: {', '.join(allowed)})",
                reason=f"CUSTOMER_NOT_{allowed[0]}" if len(allowed) == 1 else "ILLEGAL_TRANSITION",
            )
        return target

    def _require_modifiable(self, verb: str) -> None:
        if self.status not in MODIFIABLE:
            raise IllegalTransition(
                f"cannot {verb} a customer in status {self.status.name}", reason=f"CUSTOMER_{self.status.name}"
            )

    # -- commands ------------------------------------------------------------------------

    def approve(self, *, today: date, now: datetime) -> tuple[Customer, CustomerVerified]:
        """KYC approved: PENDING → ACTIVE, adults only."""
        target = self._transition("approve", "approve")
        if self.age_on(today) < ADULT_AGE:
            raise IllegalTransition(f"a customer must be at least {ADULT_AGE} to be ACTIVE", reason="CUSTOMER_UNDERAGE")
        new = self._changed(now, status=target, kyc_verified=True)
        return new, CustomerVerified(new)

    def reject(self, reason: str, *, now: datetime) -> tuple[Customer, CustomerRejected]:
        """KYC rejected: PENDING → REJECTED."""
        target = self._transition("reject", "reject")
        new = self._changed(now, status=target, kyc_verified=False)
        return new, CustomerRejected(new, reason)

    def close(self, reason: str, *, now: datetime) -> tuple[Customer, CustomerClosed]:
        """ACTIVE → CLOSED."""
        target = self._transition("close", "close")
        new = self._changed(now, status=target)
        return new, CustomerClosed(new, reason)

    def assess_risk(
        self, score: int, *, now: datetime, validity: timedelta = DEFAULT_RISK_VALIDITY
    ) -> tuple[Customer, CustomerRiskAssessed]:
        """Score the questionnaire; the tolerance expires after ``validity``."""
        self._require_modifiable("assess the risk of")
        tolerance = risk_tolerance_for(score)
        new = self._changed(now, risk_tolerance=tolerance, risk_tolerance_expire_time=now + validity)
        return new, CustomerRiskAssessed(new, score, self.risk_tolerance)

    def update(
        self, changes: Mapping[str, object], *, today: date, now: datetime
    ) -> tuple[Customer, CustomerUpdated | None]:
        """Change personal data (``changes`` keys from UPDATABLE_FIELDS); None when nothing changed."""
        self._require_modifiable("update")
        unknown = [name for name in changes if name not in UPDATABLE_FIELDS]
        if unknown:
            raise ValidationFailed([Violation(name, "cannot be updated", "IMMUTABLE") for name in unknown])
        personal = replace(self.personal, **changes)  # type: ignore[arg-type]
        found = [v for v in validate_personal(personal, today=today) if v.field in changes]
        if found:
            raise ValidationFailed(found)
        changed = sorted(name for name in changes if getattr(personal, name) != getattr(self.personal, name))
        if not changed:
            return self, None
        new = self._changed(now, personal=personal)
        return new, CustomerUpdated(new, tuple(changed))


def register(
    customer_id: str, personal: PersonalData, *, today: date, now: datetime
) -> tuple[Customer, CustomerCreated]:
    """A new customer in status PENDING (minors may register; only adults become ACTIVE)."""
    found = validate_personal(personal, today=today)
    if found:
        raise ValidationFailed(found)
    customer = Customer(
        customer_id=customer_id,
        personal=personal,
        status=Status.PENDING,
        kyc_verified=False,
        version=1,
        create_time=now,
        update_time=now,
    )
    return customer, CustomerCreated(customer)


# --------------------------------------------------------------------------------------------
# Events (past tense, immutable; the service turns them into bank.customer.v1 messages)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerEvent:
    customer: Customer


@dataclass(frozen=True)
class CustomerCreated(CustomerEvent):
    pass


@dataclass(frozen=True)
class CustomerUpdated(CustomerEvent):
    changed_fields: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class CustomerVerified(CustomerEvent):
    pass


@dataclass(frozen=True)
class CustomerRejected(CustomerEvent):
    reason: str = ""


@dataclass(frozen=True)
class CustomerRiskAssessed(CustomerEvent):
    questionnaire_score: int = 0
    previous_risk_tolerance: RiskTolerance | None = None


@dataclass(frozen=True)
class CustomerClosed(CustomerEvent):
    reason: str = ""
