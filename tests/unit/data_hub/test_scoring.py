"""Pure rules: churn reason codes, lifecycle stages, segments and offers (no fixtures)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.data_hub import domain as d
from services.data_hub.domain import DAY_US, MICROS, Rules

RULES = Rules()
NOW = 1_750_000_000 * MICROS  # mid-June 2025
YEAR_BORN = 1985


def deposit(balance: float, *, sid: str = "s1", opened_days_ago: int = 400, closed_days_ago: int | None = None,
            product: str = "dep-current", ptype: int = d.TYPE_DEPOSIT) -> d.Holding:  # fmt: skip
    return d.Holding(
        sid, product, ptype, "CNY", int(balance * MICROS),
        d.HOLDING_CLOSED if closed_days_ago is not None else d.HOLDING_OPEN,
        NOW - opened_days_ago * DAY_US,
        NOW - closed_days_ago * DAY_US if closed_days_ago is not None else None,
    )  # fmt: skip


def facts(**kw: object) -> d.CustomerFacts:
    base = d.CustomerFacts(
        customer_id="c1", registered=True, status=d.STATUS_ACTIVE, kyc_verified=True, risk_tolerance=3,
        risk_tolerance_expire_us=NOW + 300 * DAY_US, birth_year=YEAR_BORN, create_us=NOW - 400 * DAY_US,
        as_of_us=NOW, holdings=(deposit(10_000),),
        activity=d.Activity(count_30d=8, count_90d=24, count_365d=100, last_txn_us=NOW - 2 * DAY_US, count_baseline=24),
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_steady_customer_has_no_churn_reasons_and_is_active() -> None:
    f = facts()
    churn = d.churn_risk(f, RULES)
    assert churn == d.Churn(0.0, ())
    assert d.lifecycle_stage(f, churn, RULES) == d.STAGE_ACTIVE


def test_activity_drop_when_the_last_30_days_fall_below_half_the_usual_rate() -> None:
    f = facts(activity=d.Activity(count_30d=2, count_baseline=24, last_txn_us=NOW - DAY_US))
    assert d.churn_risk(f, RULES).reasons == (d.ACTIVITY_DROP,)
    # a customer who never transacted much has no "usual rate" to drop from
    quiet = facts(activity=d.Activity(count_30d=0, count_baseline=3, last_txn_us=NOW - 20 * DAY_US))
    assert d.ACTIVITY_DROP not in d.churn_risk(quiet, RULES).reasons


def test_balance_drop_is_rebuilt_from_todays_balance_and_the_flows_since_the_cutoff() -> None:
    # 10k today after 40k net withdrawals in the look-back: 50k at the cut-off, an 80% drop
    act = d.Activity(
        count_30d=8, count_baseline=24, last_txn_us=NOW - DAY_US, net_flow_since_cutoff={"s1": -40_000 * MICROS}
    )
    churn = d.churn_risk(facts(activity=act), RULES)
    assert churn.reasons == (d.BALANCE_DROP,)
    assert churn.score == pytest.approx(RULES.churn_weights[d.BALANCE_DROP])
    # a holding opened after the cut-off did not exist then: a new deposit is no drop
    fresh = facts(holdings=(deposit(10_000, opened_days_ago=10),), activity=act)
    assert d.BALANCE_DROP not in d.churn_risk(fresh, RULES).reasons


def test_holdings_closed_recently() -> None:
    f = facts(holdings=(deposit(10_000), deposit(0, sid="s2", closed_days_ago=20, product="wm-bond-r2")))
    assert d.churn_risk(f, RULES).reasons == (d.HOLDINGS_CLOSED,)
    old = facts(holdings=(deposit(10_000), deposit(0, sid="s2", closed_days_ago=200, product="wm-bond-r2")))
    assert d.churn_risk(old, RULES).reasons == ()


def test_dormant_after_half_a_year_without_transactions() -> None:
    f = facts(activity=d.Activity(last_txn_us=NOW - 200 * DAY_US))
    churn = d.churn_risk(f, RULES)
    assert churn.reasons == (d.DORMANT,)
    assert d.lifecycle_stage(f, churn, RULES) == d.STAGE_DORMANT
    # never transacted: dormancy counts from registration
    never = facts(activity=d.Activity(), create_us=NOW - 181 * DAY_US)
    assert d.DORMANT in d.churn_risk(never, RULES).reasons


def test_reasons_combine_as_noisy_or_and_make_the_customer_at_risk() -> None:
    act = d.Activity(
        count_30d=1, count_baseline=24, last_txn_us=NOW - DAY_US, net_flow_since_cutoff={"s1": -40_000 * MICROS}
    )
    f = facts(activity=act, holdings=(deposit(10_000), deposit(0, sid="s2", closed_days_ago=5)))
    churn = d.churn_risk(f, RULES)
    assert churn.reasons == (d.ACTIVITY_DROP, d.BALANCE_DROP, d.HOLDINGS_CLOSED)
    w = RULES.churn_weights
    expected = 1 - (1 - w[d.ACTIVITY_DROP]) * (1 - w[d.BALANCE_DROP]) * (1 - w[d.HOLDINGS_CLOSED])
    assert churn.score == pytest.approx(expected, abs=1e-4)
    assert 0 <= churn.score <= 1
    assert d.lifecycle_stage(f, churn, RULES) == d.STAGE_AT_RISK


@pytest.mark.parametrize(
    ("kw", "stage"),
    [
        ({"registered": False, "status": d.STATUS_UNSPECIFIED}, d.STAGE_PROSPECT),
        ({"status": d.STATUS_PENDING, "kyc_verified": False}, d.STAGE_ONBOARDING),
        ({"status": d.STATUS_CLOSED}, d.STAGE_CLOSED),
        ({"status": d.STATUS_REJECTED}, d.STAGE_CLOSED),
        ({"create_us": NOW - 30 * DAY_US}, d.STAGE_NEW),
        ({"create_us": NOW - 400 * DAY_US}, d.STAGE_ACTIVE),
        ({"create_us": NOW - 1000 * DAY_US}, d.STAGE_MATURE),
    ],
)
def test_lifecycle_stages(kw: dict[str, object], stage: int) -> None:
    f = facts(**kw)
    assert d.lifecycle_stage(f, d.churn_risk(f, RULES), RULES) == stage


def test_closed_customers_carry_no_churn_risk() -> None:
    assert d.churn_risk(facts(status=d.STATUS_CLOSED, activity=d.Activity()), RULES) == d.Churn(0.0, ())


@pytest.mark.parametrize(
    ("rfm", "segment"),
    [((5, 5, 4), d.SEGMENT_HIGH_VALUE), ((2, 4, 1), d.SEGMENT_GROWTH), ((3, 1, 5), d.SEGMENT_GROWTH),
     ((5, 2, 2), d.SEGMENT_POTENTIAL), ((2, 2, 3), d.SEGMENT_LONG_TAIL), ((0, 0, 0), d.SEGMENT_UNSCORED)],
)  # fmt: skip
def test_segments_from_rfm(rfm: tuple[int, int, int], segment: int) -> None:
    assert d.segment_of(rfm, RULES) == segment


def test_new_and_unregistered_customers_are_not_rfm_segmented() -> None:
    assert d.segment(facts(create_us=NOW - 10 * DAY_US, rfm=(5, 5, 5)), RULES) == d.SEGMENT_NEW
    assert d.segment(facts(registered=False, rfm=(5, 5, 5)), RULES) == d.SEGMENT_UNSCORED


CATALOGUE = [
    d.Product("dep-current", "Current", d.TYPE_DEPOSIT, 1, d.PRODUCT_ACTIVE),
    d.Product("card", "Card", d.TYPE_CARD, 2, d.PRODUCT_ACTIVE, 18, 65),
    d.Product("wm-r2", "Bond R2", d.TYPE_WEALTH, 2, d.PRODUCT_ACTIVE, 18, 0),
    d.Product("wm-r3", "Mixed R3", d.TYPE_WEALTH, 3, d.PRODUCT_ACTIVE, 18, 70),
    d.Product("wm-r4", "Equity R4", d.TYPE_WEALTH, 4, d.PRODUCT_ACTIVE, 18, 65),
    d.Product("wm-r5-old", "PE R5", d.TYPE_WEALTH, 5, d.PRODUCT_ACTIVE, 30, 60),
    d.Product("retired", "Old", d.TYPE_DEPOSIT, 1, 3),
]


def offered(f: d.CustomerFacts, seg: int = d.SEGMENT_LONG_TAIL, max_offers: int = 10) -> list[str]:
    return [o.product_id for o in d.next_best_offers(f, seg, CATALOGUE, replace(RULES, max_offers=max_offers))]


def test_offers_respect_suitability_risk_tolerance_at_least_product_risk() -> None:
    ids = offered(facts(risk_tolerance=3))
    assert "wm-r2" in ids and "wm-r3" in ids
    assert "wm-r4" not in ids and "wm-r5-old" not in ids
    assert "wm-r4" in offered(facts(risk_tolerance=4))
    # no (or an expired) tolerance: no wealth product at all
    assert not [i for i in offered(facts(risk_tolerance=0)) if i.startswith("wm-")]
    assert not [i for i in offered(facts(risk_tolerance_expire_us=NOW - DAY_US)) if i.startswith("wm-")]


def test_offers_respect_the_age_range_and_skip_held_and_retired_products() -> None:
    young = facts(birth_year=2000, risk_tolerance=5)  # 25 in 2025
    assert "wm-r5-old" not in offered(young)  # min age 30
    senior = facts(birth_year=1950, risk_tolerance=5)  # 75
    assert "card" not in offered(senior) and "wm-r3" not in offered(senior)
    ids = offered(facts())
    assert "dep-current" not in ids  # held
    assert "retired" not in ids


def test_offers_are_ranked_with_reasons_and_none_for_inactive_customers() -> None:
    rich = facts(holdings=(deposit(100_000),), risk_tolerance=3)
    offers = d.next_best_offers(rich, d.SEGMENT_HIGH_VALUE, CATALOGUE, replace(RULES, max_offers=10))
    assert [o.score for o in offers] == sorted((o.score for o in offers), reverse=True)
    top = offers[0]
    assert top.product_id == "wm-r3"
    assert set(top.reasons) >= {d.NOT_HELD, d.RISK_MATCH, d.SEGMENT_AFFINITY, d.IDLE_BALANCE}
    assert len(d.next_best_offers(rich, d.SEGMENT_HIGH_VALUE, CATALOGUE, RULES)) == RULES.max_offers
    assert d.next_best_offers(facts(status=d.STATUS_PENDING), d.SEGMENT_NEW, CATALOGUE, RULES) == ()
    assert d.next_best_offers(facts(kyc_verified=False), d.SEGMENT_NEW, CATALOGUE, RULES) == ()


def test_rules_come_from_config_json_and_unknown_names_are_refused() -> None:
    rules = Rules.from_json('{"dormant_days": 120, "churn_weights": {"DORMANT": 0.9}}')
    assert rules.dormant_days == 120
    assert rules.churn_weights[d.DORMANT] == 0.9 and rules.churn_weights[d.BALANCE_DROP] == 0.35
    with pytest.raises(ValueError, match="dormant_dayz"):
        Rules.from_json('{"dormant_dayz": 1}')
