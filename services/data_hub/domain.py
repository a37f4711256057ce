"""The data hub's rules, pure: activity windows, churn risk, lifecycle, segments and offers.

No I/O here (no SQLAlchemy, Kafka or gRPC): the store hands in plain facts, this module returns
plain results, and every threshold comes from :class:`Rules` (configurable, documented with its
reasoning in docs/data-hub.md). Times are epoch microseconds (``*_us``) and amounts are
micro-units of the currency (``*_micros``: 1 CNY = 1_000_000), so the arithmetic is exact and
the same in Python, SQLite and PostgreSQL.

Everything is computed *as of* a time given by the caller (the customer's newest event time,
or the last RefreshSegments time if later), never the wall clock: the same facts give the same
view, whatever order they arrived in and however often they are replayed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from bank.customer.v1 import customer_pb2
from bank.datahub.v1 import datahub_pb2
from bank.product.v1 import product_pb2
from services.policy import eligibility as policy

DAY_US = 86_400 * 1_000_000
MICROS = 1_000_000

# The contracts' enum values (generated code: one source of truth, never hand-copied numbers).
_Customer, _Product = customer_pb2.Customer, product_pb2.Product
_Subscription, _Transaction = product_pb2.Subscription, product_pb2.Transaction
STATUS_UNSPECIFIED, STATUS_PENDING, STATUS_ACTIVE = (
    _Customer.STATUS_UNSPECIFIED,
    _Customer.STATUS_PENDING,
    _Customer.STATUS_ACTIVE,
)
STATUS_CLOSED, STATUS_REJECTED = _Customer.STATUS_CLOSED, _Customer.STATUS_REJECTED
TYPE_DEPOSIT, TYPE_LOAN, TYPE_WEALTH, TYPE_CARD = (
    _Product.TYPE_DEPOSIT,
    _Product.TYPE_LOAN,
    _Product.TYPE_WEALTH,
    _Product.TYPE_CARD,
)
PRODUCT_ACTIVE = _Product.STATE_ACTIVE
HOLDING_OPEN, HOLDING_CLOSED = _Subscription.STATE_OPEN, _Subscription.STATE_CLOSED
DIRECTION_CREDIT, DIRECTION_DEBIT = _Transaction.DIRECTION_CREDIT, _Transaction.DIRECTION_DEBIT

SEGMENT_HIGH_VALUE, SEGMENT_GROWTH, SEGMENT_POTENTIAL = (
    datahub_pb2.SEGMENT_HIGH_VALUE, datahub_pb2.SEGMENT_GROWTH, datahub_pb2.SEGMENT_POTENTIAL,
)  # fmt: skip
SEGMENT_LONG_TAIL, SEGMENT_NEW, SEGMENT_UNSCORED = (
    datahub_pb2.SEGMENT_LONG_TAIL, datahub_pb2.SEGMENT_NEW, datahub_pb2.SEGMENT_UNSCORED,
)  # fmt: skip
STAGE_PROSPECT, STAGE_ONBOARDING = datahub_pb2.LIFECYCLE_STAGE_PROSPECT, datahub_pb2.LIFECYCLE_STAGE_ONBOARDING
STAGE_NEW, STAGE_ACTIVE = datahub_pb2.LIFECYCLE_STAGE_NEW, datahub_pb2.LIFECYCLE_STAGE_ACTIVE
STAGE_MATURE, STAGE_AT_RISK = datahub_pb2.LIFECYCLE_STAGE_MATURE, datahub_pb2.LIFECYCLE_STAGE_AT_RISK
STAGE_DORMANT, STAGE_CLOSED = datahub_pb2.LIFECYCLE_STAGE_DORMANT, datahub_pb2.LIFECYCLE_STAGE_CLOSED

ACTIVITY_DROP = "ACTIVITY_DROP"
BALANCE_DROP = "BALANCE_DROP"
HOLDINGS_CLOSED = "HOLDINGS_CLOSED"
DORMANT = "DORMANT"
RISK_TOLERANCE_EXPIRED = "RISK_TOLERANCE_EXPIRED"

NOT_HELD = "NOT_HELD"
NEW_PRODUCT_TYPE = "NEW_PRODUCT_TYPE"
RISK_MATCH = "RISK_MATCH"
SEGMENT_AFFINITY = "SEGMENT_AFFINITY"
IDLE_BALANCE = "IDLE_BALANCE"


@dataclass(frozen=True)
class Rules:
    """Every threshold of the hub (see docs/data-hub.md for why each value was chosen)."""

    reporting_currency: str = "CNY"
    # Lifecycle
    new_customer_days: int = 90
    mature_customer_days: int = 730
    dormant_days: int = 180
    at_risk_score: float = 0.5
    # Churn signals
    activity_baseline_days: int = 90  # the window before the last 30 days that sets "normal"
    activity_min_baseline_per_30d: float = 2.0
    activity_drop_ratio: float = 0.5
    balance_lookback_days: int = 90
    balance_min_micros: int = 1_000 * MICROS
    balance_drop_ratio: float = 0.3
    holdings_closed_days: int = 90
    churn_weights: Mapping[str, float] = field(
        default_factory=lambda: {
            ACTIVITY_DROP: 0.35,
            BALANCE_DROP: 0.35,
            HOLDINGS_CLOSED: 0.25,
            DORMANT: 0.6,
            RISK_TOLERANCE_EXPIRED: 0.05,
        }
    )
    # Segments (RFM scores 1..5)
    high_value_min_score: int = 4
    growth_min_score: int = 4
    potential_min_recency: int = 4
    # Offers
    max_offers: int = 3
    idle_balance_micros: int = 50_000 * MICROS
    offer_base_score: float = 0.4
    #: The trained scores (services/data_hub/model.py) loaded at start-up, or None: the rules above
    #: score churn and rank offers. Not a JSON override (``ZT_DATAHUB_MODEL_PATH`` names the file).
    model: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, text: str) -> Rules:
        """Overrides as a JSON object of field names; unknown names are an error."""
        if not text.strip():
            return cls()
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("rules must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)} - {"model"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown rule(s): {', '.join(unknown)}")
        if "churn_weights" in data:
            data["churn_weights"] = {**cls().churn_weights, **data["churn_weights"]}
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Facts (what the store hands in)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    subscription_id: str
    product_id: str
    product_type: int
    currency: str
    balance_micros: int
    state: int
    open_us: int | None
    close_us: int | None


@dataclass(frozen=True)
class Product:
    product_id: str
    display_name: str
    type: int
    risk_level: int
    state: int
    min_age: int = 0
    max_age: int = 0

    @functools.cached_property
    def offering(self) -> policy.Offering:
        """The product as the eligibility policy reads it (made once: every render of a view
        checks the catalogue's products, which are the same instances until it changes)."""
        return policy.Offering(type=self.type, state=self.state, risk_level=self.risk_level, min_age=self.min_age,
                               max_age=self.max_age)  # fmt: skip


@dataclass(frozen=True)
class Activity:
    """Transaction aggregates as of the view time (amounts in the reporting currency)."""

    count_30d: int = 0
    count_90d: int = 0
    count_365d: int = 0
    amount_30d_micros: int = 0
    amount_90d_micros: int = 0
    amount_365d_micros: int = 0
    last_txn_us: int | None = None
    # Transactions in the baseline window (as_of - 30d - baseline_days, as_of - 30d].
    count_baseline: int = 0
    # Net flow (credits - debits) per subscription since the balance look-back cut-off.
    net_flow_since_cutoff: Mapping[str, int] = field(default_factory=dict)
    # Credits (money coming in: salary, transfers in) in the last 90 days.
    credit_count_90d: int = 0
    credit_amount_90d_micros: int = 0


@dataclass(frozen=True)
class CustomerFacts:
    customer_id: str
    registered: bool
    status: int
    kyc_verified: bool
    risk_tolerance: int
    risk_tolerance_expire_us: int | None
    birth_year: int
    create_us: int | None
    as_of_us: int
    holdings: Sequence[Holding] = ()
    activity: Activity = field(default_factory=Activity)
    rfm: tuple[int, int, int] = (0, 0, 0)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


#: Who produced a score when no trained model did (the view's ``model_version``).
RULES_VERSION = "rules"


@dataclass(frozen=True)
class Churn:
    score: float
    reasons: tuple[str, ...]
    model_version: str = RULES_VERSION


@dataclass(frozen=True)
class Offer:
    product_id: str
    score: float
    reasons: tuple[str, ...]
    product_type: int
    display_name: str
    model_version: str = RULES_VERSION


class ScoreModel(Protocol):
    """Trained scores (services/data_hub/model.py): churn and offer ranking for the customers it
    was trained on; None for what it does not score (the rules do)."""

    version: str

    def score(
        self, facts: CustomerFacts, candidates: Sequence[Product], rules: Rules
    ) -> tuple[Churn | None, tuple[Offer, ...] | None]: ...


@dataclass(frozen=True)
class Derived:
    positions: dict[str, int]
    churn: Churn
    lifecycle_stage: int
    segment: int
    offers: tuple[Offer, ...]


class Book(NamedTuple):
    """What the rules read of a customer's holdings, gathered in one pass (:func:`book_of`): a
    view's render reads the holdings once instead of once per rule (six passes; a live view
    carries dozens of holdings)."""

    positions: dict[str, int]  # :func:`positions`
    held_products: frozenset[str]  # products of open holdings
    held_types: frozenset[int]  # product types of open holdings
    idle_micros: int  # open deposits in the reporting currency
    balance_at_cutoff: int  # :func:`balance_at_cutoff` at the balance look-back cut-off
    closed_recently: bool  # a holding closed within ``holdings_closed_days``


def book_of(facts: CustomerFacts, rules: Rules) -> Book:
    """:class:`Book` of the customer's holdings as of ``facts.as_of_us``: the same sums and sets
    as :func:`positions`, :func:`balance_at_cutoff` and the checks of :func:`churn_risk` and
    :func:`next_best_offers` each make on their own."""
    currency = rules.reporting_currency
    cutoff = facts.as_of_us - rules.balance_lookback_days * DAY_US
    closed_cutoff = facts.as_of_us - rules.holdings_closed_days * DAY_US
    flows = facts.activity.net_flow_since_cutoff
    totals: dict[str, int] = {}
    products: set[str] = set()
    types: set[int] = set()
    idle = before = 0
    closed = False
    for h in facts.holdings:
        balance, cur = h.balance_micros, h.currency
        if h.state != HOLDING_CLOSED:
            totals[cur] = totals.get(cur, 0) + balance
            products.add(h.product_id)
            types.add(h.product_type)
            if cur == currency and h.product_type == TYPE_DEPOSIT:
                idle += balance
        elif h.close_us is not None and h.close_us > closed_cutoff:
            closed = True
        if cur == currency and (h.open_us is None or h.open_us <= cutoff):
            before += balance - flows.get(h.subscription_id, 0)
    return Book(dict(sorted(totals.items())), frozenset(products), frozenset(types), idle, max(before, 0), closed)


def year_of(us: int) -> int:
    return datetime.fromtimestamp(us / MICROS, UTC).year


def positions(holdings: Iterable[Holding]) -> dict[str, int]:
    """Sum of open balances per currency (AUM), currencies sorted."""
    totals: dict[str, int] = {}
    for h in holdings:
        if h.state != HOLDING_CLOSED:
            totals[h.currency] = totals.get(h.currency, 0) + h.balance_micros
    return dict(sorted(totals.items()))


def balance_at_cutoff(holdings: Iterable[Holding], activity: Activity, cutoff_us: int, currency: str) -> int:
    """Reporting-currency balance at the look-back cut-off, rebuilt from today's balances and flows."""
    total = 0
    for h in holdings:
        if h.currency != currency:
            continue
        if h.open_us is not None and h.open_us > cutoff_us:
            continue  # did not exist yet
        total += h.balance_micros - activity.net_flow_since_cutoff.get(h.subscription_id, 0)
    return max(total, 0)


def is_dormant(facts: CustomerFacts, rules: Rules) -> bool:
    """DORMANT: nothing for a long time (since the last transaction, or since registration)."""
    since = facts.activity.last_txn_us if facts.activity.last_txn_us is not None else facts.create_us
    return since is not None and facts.as_of_us - since >= rules.dormant_days * DAY_US


def churn_risk(facts: CustomerFacts, rules: Rules, book: Book | None = None) -> Churn:
    """Reason codes from the customer's own history, combined as a noisy-OR of their weights.
    ``book``: :func:`book_of` these facts, if the caller has it."""
    if not facts.registered or facts.status in (STATUS_CLOSED, STATUS_REJECTED):
        return Churn(0.0, ())
    book = book if book is not None else book_of(facts, rules)
    reasons: list[str] = []
    a = facts.activity
    as_of = facts.as_of_us
    if is_dormant(facts, rules):
        reasons.append(DORMANT)
    # ACTIVITY_DROP: the last 30 days are well below the customer's own usual monthly rate.
    baseline_per_30d = a.count_baseline * 30 / rules.activity_baseline_days
    if baseline_per_30d >= rules.activity_min_baseline_per_30d and a.count_30d < baseline_per_30d * (
        1 - rules.activity_drop_ratio
    ):
        reasons.append(ACTIVITY_DROP)
    # BALANCE_DROP: reporting-currency balances fell by a large share over the look-back
    # (:func:`balance_at_cutoff` at the cut-off, :func:`positions` now).
    before = book.balance_at_cutoff
    now = book.positions.get(rules.reporting_currency, 0)
    if before >= rules.balance_min_micros and now < before * (1 - rules.balance_drop_ratio):
        reasons.append(BALANCE_DROP)
    # HOLDINGS_CLOSED: a product relationship ended recently (within holdings_closed_days).
    if book.closed_recently:
        reasons.append(HOLDINGS_CLOSED)
    if policy.assessment_expired(facts.risk_tolerance_expire_us, as_of):
        reasons.append(RISK_TOLERANCE_EXPIRED)
    keep = 1.0
    for reason in reasons:
        keep *= 1.0 - rules.churn_weights.get(reason, 0.0)
    return Churn(round(1.0 - keep, 4), tuple(reasons))


def lifecycle_stage(facts: CustomerFacts, churn: Churn, rules: Rules) -> int:
    if not facts.registered:
        return STAGE_PROSPECT
    if facts.status in (STATUS_CLOSED, STATUS_REJECTED):
        return STAGE_CLOSED
    if facts.status != STATUS_ACTIVE:
        return STAGE_ONBOARDING
    if is_dormant(facts, rules):
        return STAGE_DORMANT
    if churn.score >= rules.at_risk_score:
        return STAGE_AT_RISK
    tenure = facts.as_of_us - (facts.create_us if facts.create_us is not None else facts.as_of_us)
    if tenure < rules.new_customer_days * DAY_US:
        return STAGE_NEW
    if tenure >= rules.mature_customer_days * DAY_US:
        return STAGE_MATURE
    return STAGE_ACTIVE


def is_scorable(facts: CustomerFacts, rules: Rules) -> bool:
    """In the RFM population: registered, not closed, past the first scoring window."""
    return segment_gate(facts.registered, facts.status, facts.create_us, facts.as_of_us, rules) is None


def segment_gate(registered: bool, status: int, create_us: int | None, as_of_us: int, rules: Rules) -> int | None:
    """The segment of a customer who is NOT scored by RFM (None: scored)."""
    if not registered or status != STATUS_ACTIVE:
        return SEGMENT_UNSCORED
    if create_us is not None and as_of_us - create_us < rules.new_customer_days * DAY_US:
        return SEGMENT_NEW
    return None


def segment_of(rfm: tuple[int, int, int], rules: Rules) -> int:
    """Value segment from RFM scores (1..5 each; 0 = not scored)."""
    r, f, m = rfm
    if 0 in (r, f, m):
        return SEGMENT_UNSCORED
    if min(r, f, m) >= rules.high_value_min_score:
        return SEGMENT_HIGH_VALUE
    if f >= rules.growth_min_score or m >= rules.growth_min_score:
        return SEGMENT_GROWTH
    if r >= rules.potential_min_recency:
        return SEGMENT_POTENTIAL
    return SEGMENT_LONG_TAIL


def segment(facts: CustomerFacts, rules: Rules) -> int:
    gated = segment_gate(facts.registered, facts.status, facts.create_us, facts.as_of_us, rules)
    return gated if gated is not None else segment_of(facts.rfm, rules)


def age_at(birth_year: int, as_of_us: int) -> int | None:
    return year_of(as_of_us) - birth_year if birth_year else None


def next_best_offers(
    facts: CustomerFacts, segment_value: int, catalogue: Iterable[Product], rules: Rules, book: Book | None = None
) -> tuple[Offer, ...]:
    """Eligible products the customer does not hold, ranked (score desc, then id), with reasons.

    Eligibility is the bank-wide policy the product service applies too
    (:func:`services.policy.eligibility.eligibility_reasons`: an ACTIVE, KYC-verified customer,
    the product's age range, for WEALTH a valid risk tolerance at least the product's risk
    level, an ACTIVE product). The hub knows the birth year only, so the customer's age is the
    range (year difference - 1, year difference) and must fit the bounds at both ends.
    ``book``: :func:`book_of` these facts, if the caller has it.
    """
    book = book if book is not None else book_of(facts, rules)
    held_types = book.held_types  # (of open holdings)
    idle = book.idle_micros  # open deposits in the reporting currency
    offers: list[Offer] = []
    for p in eligible_products(facts, catalogue, book):
        reasons = [NOT_HELD]
        score = rules.offer_base_score
        if p.type == TYPE_WEALTH:  # (suitable: the policy checked the tolerance)
            reasons.append(RISK_MATCH)
            score += 0.2 if facts.risk_tolerance == p.risk_level else 0.1
        if p.type not in held_types:
            reasons.append(NEW_PRODUCT_TYPE)
            score += 0.1
        if (p.type == TYPE_WEALTH and segment_value in (SEGMENT_HIGH_VALUE, SEGMENT_GROWTH)) or (
            p.type == TYPE_CARD and segment_value in (SEGMENT_POTENTIAL, SEGMENT_NEW)
        ):
            reasons.append(SEGMENT_AFFINITY)
            score += 0.15
        if p.type in (TYPE_WEALTH, TYPE_DEPOSIT) and idle >= rules.idle_balance_micros:
            reasons.append(IDLE_BALANCE)
            score += 0.15
        offers.append(Offer(p.product_id, round(min(score, 1.0), 4), tuple(reasons), p.type, p.display_name))
    offers.sort(key=lambda o: (-o.score, o.product_id))
    return tuple(offers[: rules.max_offers])


def eligible_products(facts: CustomerFacts, catalogue: Iterable[Product], book: Book | None = None) -> list[Product]:
    """The catalogue's products this customer does not hold and may open (the bank-wide
    eligibility policy, suitability included): the only candidates of any offer, rules or model.
    ``book``: :func:`book_of` these facts, if the caller has it."""
    if not facts.registered:
        return []
    years = age_at(facts.birth_year, facts.as_of_us)
    applicant = policy.Applicant(
        status=facts.status,
        kyc_verified=facts.kyc_verified,
        age_low=None if years is None else years - 1,
        age_high=years,
        risk_tolerance=facts.risk_tolerance,
        risk_tolerance_expire_us=facts.risk_tolerance_expire_us,
    )
    held = (
        book.held_products if book is not None else {h.product_id for h in facts.holdings if h.state != HOLDING_CLOSED}
    )
    out: list[Product] = []
    for p in catalogue:
        if p.product_id in held:
            continue
        if not policy.eligibility_reasons(p.offering, applicant, facts.as_of_us):
            out.append(p)  # never offer what the product service would refuse
    return out


def derive(facts: CustomerFacts, catalogue: Iterable[Product], rules: Rules) -> Derived:
    """Everything in the view that is computed rather than copied from events."""
    seg = segment(facts, rules)
    book = book_of(facts, rules)  # (the holdings read once for every rule)
    model: ScoreModel | None = rules.model
    churn: Churn | None = None
    offers: tuple[Offer, ...] | None = None
    if model is not None:
        churn, offers = model.score(facts, eligible_products(facts, catalogue, book), rules)
    churn = churn if churn is not None else churn_risk(facts, rules, book)
    return Derived(
        positions=book.positions,
        churn=churn,
        lifecycle_stage=lifecycle_stage(facts, churn, rules),
        segment=seg,
        offers=offers if offers is not None else next_best_offers(facts, seg, catalogue, rules, book),
    )


def rfm_code(rfm: tuple[int, int, int]) -> str:
    return "" if 0 in rfm else "".join(str(x) for x in rfm)
