"""The scores' features: one customer's facts as of a time -> a fixed vector of numbers. Pure.

The same function serves three callers, so training and serving can never disagree:
- the view (services/data_hub/views.py: the facts as of the customer's newest event);
- the monthly point-in-time snapshots (services/data_hub/snapshots.py: the facts as they were
  at a month end, rebuilt from the stored rows with nothing later than that date);
- the training and back-test tooling (devtools/models), which reads those snapshots.

Each feature names the reason code it explains (:data:`CHURN_REASON`, :data:`OFFER_REASON`):
the model's reasons are the codes of its largest contributions (services/data_hub/model.py).
Changing a feature's meaning or order is a new :data:`VERSION` (an artifact trained on another
version is refused at start-up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from services.data_hub import domain
from services.data_hub.domain import DAY_US, MICROS, CustomerFacts, Rules

VERSION = 2

NAMES = (
    "months_since_txn",
    "log_txn_30d",
    "log_txn_90d",
    "log_txn_per_month_365d",
    "activity_ratio_30d",
    "credit_share_90d",
    "log_credit_90d",
    "log_debit_90d",
    "log_balance",
    "balance_ratio_90d",
    "holdings_open",
    "holdings_closed_90d",
    "tenure_years",
    "age_decades",
    "holds_term_deposit",
    "holds_card",
    "holds_loan",
    "holds_wealth",
    "age_under_30",
    "age_30_to_45",
    "age_45_to_60",
    "log_deposits",
    "tolerance_c1",
    "tolerance_c2",
    "tolerance_c3",
    "tolerance_c4",
    "tolerance_c5",
    # version 2: trends over several windows, money flows, the main account (ADR 0037)
    "log_amount_30d",
    "amount_ratio_30d",
    "amount_ratio_90d",
    "count_ratio_30d",
    "count_ratio_90d",
    "log_credits_90d",
    "log_main_balance",
    "log_outflow_90d",
    "net_flow_90d",
    "outflow_share_90d",
    "years_since_open",
    "holdings_closed",
    "debit_credit_ratio_90d",
)

# Reason codes (documented in docs/data-hub.md). Churn: the rules' codes plus INFLOW_DROP (money
# stopped coming in: salary moved), FEW_PRODUCTS and NEW_RELATIONSHIP.
INFLOW_DROP = "INFLOW_DROP"
FEW_PRODUCTS = "FEW_PRODUCTS"
NEW_RELATIONSHIP = "NEW_RELATIONSHIP"
CHURN_REASON = {
    "months_since_txn": domain.DORMANT,
    "log_txn_30d": domain.ACTIVITY_DROP,
    "log_txn_90d": domain.ACTIVITY_DROP,
    "log_txn_per_month_365d": domain.ACTIVITY_DROP,
    "activity_ratio_30d": domain.ACTIVITY_DROP,
    "credit_share_90d": INFLOW_DROP,
    "log_credit_90d": INFLOW_DROP,
    "log_debit_90d": domain.BALANCE_DROP,
    "log_balance": domain.BALANCE_DROP,
    "balance_ratio_90d": domain.BALANCE_DROP,
    "holdings_open": FEW_PRODUCTS,
    "holdings_closed_90d": domain.HOLDINGS_CLOSED,
    "tenure_years": NEW_RELATIONSHIP,
    "holds_term_deposit": FEW_PRODUCTS,
    "holds_card": FEW_PRODUCTS,
    "holds_loan": FEW_PRODUCTS,
    "holds_wealth": FEW_PRODUCTS,
    "log_amount_30d": domain.ACTIVITY_DROP,
    "amount_ratio_30d": domain.ACTIVITY_DROP,
    "amount_ratio_90d": domain.ACTIVITY_DROP,
    "count_ratio_30d": domain.ACTIVITY_DROP,
    "count_ratio_90d": domain.ACTIVITY_DROP,
    "log_credits_90d": INFLOW_DROP,
    "debit_credit_ratio_90d": INFLOW_DROP,
    "log_main_balance": domain.BALANCE_DROP,
    "log_outflow_90d": domain.BALANCE_DROP,
    "net_flow_90d": domain.BALANCE_DROP,
    "outflow_share_90d": domain.BALANCE_DROP,
    "holdings_closed": domain.HOLDINGS_CLOSED,
    "years_since_open": FEW_PRODUCTS,
}
# Offers: why this product for this customer (after NOT_HELD, always first). Age bands and the
# tolerance classes are indicators: needs rise and fall with them (a loan in the family years, a
# fund in a tolerance band), which a linear score of the raw number cannot express.
LIFE_STAGE = "LIFE_STAGE"
ENGAGEMENT = "ENGAGEMENT"
PRODUCT_MIX = "PRODUCT_MIX"
OFFER_REASON = {
    "log_balance": domain.IDLE_BALANCE,
    "balance_ratio_90d": domain.IDLE_BALANCE,
    "log_credit_90d": domain.IDLE_BALANCE,
    **{f"tolerance_c{n}": domain.RISK_MATCH for n in range(1, 6)},
    "log_deposits": domain.IDLE_BALANCE,
    "age_decades": LIFE_STAGE,
    "age_under_30": LIFE_STAGE,
    "age_30_to_45": LIFE_STAGE,
    "age_45_to_60": LIFE_STAGE,
    "tenure_years": LIFE_STAGE,
    "log_txn_30d": ENGAGEMENT,
    "log_txn_90d": ENGAGEMENT,
    "log_txn_per_month_365d": ENGAGEMENT,
    "log_debit_90d": ENGAGEMENT,
    "holdings_open": PRODUCT_MIX,
    "holds_term_deposit": PRODUCT_MIX,
    "holds_card": PRODUCT_MIX,
    "holds_loan": PRODUCT_MIX,
    "holds_wealth": PRODUCT_MIX,
    "log_main_balance": domain.IDLE_BALANCE,
    "net_flow_90d": domain.IDLE_BALANCE,
    "log_amount_30d": ENGAGEMENT,
    "log_credits_90d": ENGAGEMENT,
    "years_since_open": PRODUCT_MIX,
    "holdings_closed": PRODUCT_MIX,
}


# The one offer model (ADR 0050) scores (customer, product) pairs: the customer's features above,
# then these, computed from the product's catalogue entry (:func:`offer_vector`). The customer's
# feature version is unchanged by them (stored snapshots stay valid); an artifact lists them.
OFFER_NAMES = (
    "product_is_deposit",
    "product_is_loan",
    "product_is_wealth",
    "product_is_card",
    "product_risk_level",
    "risk_headroom",  # the customer's valid tolerance class minus the product's risk level
    "age_headroom_decades",  # the product's maximum age (100 without one) minus the age, in decades
    "wealth_risk_level",  # the product's risk level if it is a wealth product, else 0
    # ADR 0056: the customer's needs the simulator documents (docs/data-hub.md, "The simulated
    # population"), each asked of the product family it drives, so a tree of depth 3 spends its
    # questions on the customer rather than on finding the product first
    "wealth_risk_gap",  # a wealth product: |valid tolerance class - risk level| (9: no valid class); else 0
    "wealth_main_balance",  # a wealth product: log_main_balance (the current account); else 0
    "deposit_main_balance",  # a deposit: log_main_balance; else 0
    "holds_same_type",  # holds an open product of the same type (a term deposit for a deposit)
    "r5_main_balance",  # the R5 wealth product: log_main_balance; else 0
    "card_engagement",  # a card: log_txn_per_month_365d; else 0
    "loan_main_balance",  # a loan: log_main_balance; else 0
)
OFFER_PRODUCT_REASON = {
    "risk_headroom": domain.RISK_MATCH,
    "age_headroom_decades": LIFE_STAGE,
    "wealth_risk_gap": domain.RISK_MATCH,
    "wealth_main_balance": domain.IDLE_BALANCE,
    "deposit_main_balance": domain.IDLE_BALANCE,
    "r5_main_balance": domain.IDLE_BALANCE,
    "holds_same_type": PRODUCT_MIX,
    "card_engagement": ENGAGEMENT,
    # (loan_main_balance explains nothing: a loan is for a *small* balance, not idle money)
}
_TOLERANCE = tuple(NAMES.index(f"tolerance_c{n}") for n in range(1, 6))
_AGE = NAMES.index("age_decades")
_MAIN = NAMES.index("log_main_balance")
_ENGAGEMENT = NAMES.index("log_txn_per_month_365d")
_HOLDS: dict[int, int] = {
    domain.TYPE_DEPOSIT: NAMES.index("holds_term_deposit"),
    domain.TYPE_CARD: NAMES.index("holds_card"),
    domain.TYPE_LOAN: NAMES.index("holds_loan"),
    domain.TYPE_WEALTH: NAMES.index("holds_wealth"),
}


def offer_vector(x: Sequence[float], product: domain.Product) -> list[float]:
    """The customer's features ``x`` (:func:`vector`) followed by :data:`OFFER_NAMES` for one product."""
    tolerance = sum(n * x[i] for n, i in zip(range(1, 6), _TOLERANCE, strict=True))
    kind, main = product.type, x[_MAIN]
    wealth = kind == domain.TYPE_WEALTH
    held = _HOLDS.get(kind)
    return [
        *x,
        float(product.type == domain.TYPE_DEPOSIT),
        float(product.type == domain.TYPE_LOAN),
        float(wealth),
        float(product.type == domain.TYPE_CARD),
        float(product.risk_level),
        tolerance - product.risk_level,
        round((product.max_age or 100) / 10 - x[_AGE], 6),  # (as the snapshots round)
        float(product.risk_level) if wealth else 0.0,
        (abs(tolerance - product.risk_level) if tolerance else 9.0) if wealth else 0.0,
        main if wealth else 0.0,
        main if kind == domain.TYPE_DEPOSIT else 0.0,
        x[held] if held is not None else 0.0,
        main if wealth and product.risk_level == 5 else 0.0,
        x[_ENGAGEMENT] if kind == domain.TYPE_CARD else 0.0,
        main if kind == domain.TYPE_LOAN else 0.0,
    ]


def _log_cny(micros: int) -> float:
    """log(1 + amount in thousands of the currency)."""
    return math.log1p(max(micros, 0) / (1_000 * MICROS))


def _ratio(part: float, whole: float, floor: float) -> float:
    """(part + floor) / (whole + floor), at most 3: a trend that is defined for zeros."""
    return min(3.0, (part + floor) / (whole + floor))


class _Holdings(NamedTuple):
    """What the features read of the holdings, gathered in one pass (:func:`_holdings`): a live
    view carries dozens of holdings, and the features used to read them eight times."""

    now: int  # open balances in the reporting currency (:func:`domain.positions`)
    before: int  # :func:`domain.balance_at_cutoff` at the balance look-back cut-off
    open_count: int
    closed_count: int
    closed_recently: int  # closed within 90 days of ``as_of``
    types: frozenset[int]  # product types of open holdings
    deposits: int  # open deposits (any currency)
    deposit_total: int  # their balances
    main_balance: int  # the oldest open deposit's balance (0: none): the main account
    last_open_us: int | None  # the latest opening


def _holdings(facts: CustomerFacts, rules: Rules) -> _Holdings:
    """:class:`_Holdings` of ``facts`` as of ``facts.as_of_us``: the same integers the per-rule
    passes computed (integer sums do not depend on their order)."""
    currency, flows = rules.reporting_currency, facts.activity.net_flow_since_cutoff
    cut = facts.as_of_us - rules.balance_lookback_days * DAY_US
    closed_since = facts.as_of_us - 90 * DAY_US
    now = before = open_count = closed = closed_recently = deposits = deposit_total = 0
    types: set[int] = set()
    main: tuple[tuple[int, str], int] | None = None  # (its sort key, its balance)
    last_open: int | None = None
    for h in facts.holdings:
        opened, balance, cur = h.open_us, h.balance_micros, h.currency
        if opened is not None and (last_open is None or opened > last_open):
            last_open = opened
        if cur == currency and (opened is None or opened <= cut):
            before += balance - flows.get(h.subscription_id, 0)
        if h.state == domain.HOLDING_CLOSED:
            closed += 1
            if h.close_us is not None and h.close_us > closed_since:
                closed_recently += 1
            continue
        open_count += 1
        types.add(h.product_type)
        if cur == currency:
            now += balance
        if h.product_type == domain.TYPE_DEPOSIT:
            deposits += 1
            deposit_total += balance
            key = (opened or 0, h.subscription_id)
            if main is None or key < main[0]:
                main = (key, balance)
    return _Holdings(
        now, max(before, 0), open_count, closed, closed_recently, frozenset(types), deposits, deposit_total,
        main[1] if main is not None else 0, last_open,
    )  # fmt: skip


def _flows(facts: CustomerFacts, held: _Holdings) -> tuple[float, ...]:
    """Version 2's features: activity trends over the 30/90/365-day windows, money in and out over
    the balance look-back, the main account, the relationship's last move."""
    a, as_of, k, now = facts.activity, facts.as_of_us, 1_000 * MICROS, held.now
    outflow = -sum(min(v, 0) for v in a.net_flow_since_cutoff.values())
    net = sum(a.net_flow_since_cutoff.values())
    debit = a.amount_90d_micros - a.credit_amount_90d_micros
    return (
        _log_cny(a.amount_30d_micros),
        _ratio(a.amount_30d_micros, a.amount_90d_micros / 3, k),
        _ratio(a.amount_90d_micros, a.amount_365d_micros / 4, k),
        _ratio(a.count_30d, a.count_90d / 3, 1),
        _ratio(a.count_90d, a.count_365d / 4, 1),
        math.log1p(a.credit_count_90d),
        _log_cny(held.main_balance),  # the oldest deposit: the main account
        _log_cny(outflow),
        math.copysign(_log_cny(abs(net)), net),
        _ratio(outflow, now, k),
        min(5.0, (as_of - held.last_open_us) / (365 * DAY_US)) if held.last_open_us is not None else 5.0,
        float(held.closed_count),
        _ratio(debit, a.credit_amount_90d_micros, k),
    )


def vector(facts: CustomerFacts, rules: Rules) -> tuple[float, ...]:
    """The features of :data:`NAMES`, in order, as of ``facts.as_of_us``."""
    a, as_of = facts.activity, facts.as_of_us
    since = a.last_txn_us if a.last_txn_us is not None else facts.create_us
    months_since = min(365.0, (as_of - since) / DAY_US) / 30 if since is not None else 12.0
    baseline_per_30d = a.count_baseline * 30 / rules.activity_baseline_days
    held = _holdings(facts, rules)
    now, before, types = held.now, held.before, held.types
    age = domain.age_at(facts.birth_year, as_of)
    years = age if age is not None else 200  # (unknown: in no age band)
    tenure = (as_of - facts.create_us) / (365 * DAY_US) if facts.create_us is not None else 0.0
    valid_tolerance = (
        facts.risk_tolerance if not domain.policy.assessment_expired(facts.risk_tolerance_expire_us, as_of) else 0
    )
    return (
        months_since,
        math.log1p(a.count_30d),
        math.log1p(a.count_90d),
        math.log1p(a.count_365d / 12),
        min(3.0, (a.count_30d + 1) / (baseline_per_30d + 1)),
        a.credit_count_90d / a.count_90d if a.count_90d else 0.0,
        _log_cny(a.credit_amount_90d_micros),
        _log_cny(a.amount_90d_micros - a.credit_amount_90d_micros),
        _log_cny(now),
        min(3.0, (now + 1_000 * MICROS) / (before + 1_000 * MICROS)),
        float(held.open_count),
        float(held.closed_recently),
        min(10.0, max(tenure, 0.0)),
        (age or 0) / 10,
        float(held.deposits >= 2),  # a term deposit beside the current account
        float(domain.TYPE_CARD in types),
        float(domain.TYPE_LOAN in types),
        float(domain.TYPE_WEALTH in types),
        float(years < 30),
        float(30 <= years < 45),
        float(45 <= years < 60),
        _log_cny(held.deposit_total),
        *(float(valid_tolerance == n) for n in range(1, 6)),
        *_flows(facts, held),
    )


def scorable(facts: CustomerFacts) -> bool:
    """Who the churn model scores: a registered ACTIVE customer who still holds something (the
    population it was trained on); everyone else keeps the rules' score."""
    return (
        facts.registered
        and facts.status == domain.STATUS_ACTIVE
        and any(h.state != domain.HOLDING_CLOSED for h in facts.holdings)
    )
