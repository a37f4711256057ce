"""Trained scores in the view (services/data_hub/model.py): reasons from contributions, offers
only among eligible products, the rules when no artifact is there (no fixtures)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from services.data_hub import domain as d
from services.data_hub import features, model
from services.data_hub.domain import DAY_US, Rules
from tests.unit.data_hub.test_scoring import NOW, deposit, facts

N = len(features.NAMES)
CATALOGUE = [
    d.Product("card-classic", "Card", d.TYPE_CARD, 2, d.PRODUCT_ACTIVE, 18, 65),
    d.Product("wm-bond-r2", "Bond fund R2", d.TYPE_WEALTH, 2, d.PRODUCT_ACTIVE, 18, 0),
    d.Product("wm-pe-r5", "Private equity R5", d.TYPE_WEALTH, 5, d.PRODUCT_ACTIVE, 30, 60),
]


def artifact(**churn_coef: float) -> dict[str, object]:
    coef = [churn_coef.get(n, 0.0) for n in features.NAMES]
    loves_balance = [3.0 if n == "log_balance" else 0.0 for n in features.NAMES]
    return {
        "format": model.FORMAT,
        "version": "scores-test-1",
        "feature_version": features.VERSION,
        "features": list(features.NAMES),
        "mean": [0.0] * N,
        "scale": [1.0] * N,
        "churn": {"coef": coef, "intercept": -2.0, "at_risk_probability": 0.2},
        "offers": {
            "wm-pe-r5": {"coef": loves_balance, "intercept": 0.0},
            "wm-bond-r2": {"coef": [0.0] * N, "intercept": -1.0},
        },
    }


def with_model(a: dict[str, object]) -> Rules:
    return replace(Rules(), model=model.ScoreModel.from_artifact(a))


def test_without_an_artifact_the_rules_score_and_say_so(tmp_path: Path) -> None:
    assert model.load("") is None
    assert model.load(str(tmp_path / "absent.json")) is None
    derived = d.derive(facts(activity=d.Activity(last_txn_us=NOW - 200 * DAY_US)), CATALOGUE, Rules())
    assert derived.churn.model_version == d.RULES_VERSION and derived.churn.reasons == (d.DORMANT,)
    assert all(o.model_version == d.RULES_VERSION for o in derived.offers)


def test_an_unusable_artifact_stops_start_up_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "scores.json"
    bad.write_text(json.dumps({**artifact(), "features": ["x"]}))
    with pytest.raises(model.ArtifactError, match="features"):
        model.load(str(bad))
    bad.write_text("{")
    with pytest.raises(model.ArtifactError, match="not JSON"):
        model.load(str(bad))


def test_churn_reasons_are_the_codes_of_the_largest_contributions() -> None:
    rules = with_model(artifact(months_since_txn=1.0, log_balance=-0.5, age_decades=0.0))
    quiet = facts(activity=d.Activity(last_txn_us=NOW - 100 * DAY_US))  # 3.3 months without a transaction
    churn = d.derive(quiet, CATALOGUE, rules).churn
    assert churn.model_version == "scores-test-1"
    assert churn.reasons[0] == d.DORMANT  # +3.3 to the log-odds
    # the score is the probability mapped so that at_risk_probability lands on the AT_RISK line
    m = rules.model
    assert m.view_score(0.2) == 0.5 and m.view_score(0.1) == 0.25 and m.view_score(1.0) == 1.0
    busy = facts(activity=d.Activity(count_30d=9, last_txn_us=NOW - DAY_US))
    assert d.derive(busy, CATALOGUE, rules).churn.score < churn.score


def test_the_model_scores_only_active_customers_who_hold_something() -> None:
    rules = with_model(artifact(months_since_txn=1.0))
    gone = facts(holdings=(deposit(0, closed_days_ago=10),))
    assert d.derive(gone, CATALOGUE, rules).churn.model_version == d.RULES_VERSION


def test_offers_never_break_suitability_whatever_the_model_prefers() -> None:
    rules = with_model(artifact())
    rich = facts(holdings=(deposit(5_000_000),), risk_tolerance=2)  # C2: R5 is not suitable
    offers = d.derive(rich, CATALOGUE, rules).offers
    assert "wm-pe-r5" not in {o.product_id for o in offers}
    assert {o.product_id for o in offers} <= {p.product_id for p in d.eligible_products(rich, CATALOGUE)}
    bold = replace(rich, risk_tolerance=5)
    top = d.derive(bold, CATALOGUE, rules).offers[0]
    assert top.product_id == "wm-pe-r5" and top.model_version == "scores-test-1"
    assert top.reasons == (d.NOT_HELD, d.IDLE_BALANCE)


def test_the_same_facts_give_the_same_scores() -> None:
    rules = with_model(artifact(months_since_txn=0.7, log_txn_30d=-0.3))
    f = facts()
    assert d.derive(f, CATALOGUE, rules) == d.derive(
        f, CATALOGUE, with_model(artifact(months_since_txn=0.7, log_txn_30d=-0.3))
    )


def stump(feature: int, threshold: float, low: float, high: float) -> dict[str, list[float]]:
    """A one-question tree (its root's value: the average of two equally large leaves)."""
    return {
        "feature": [feature, -1, -1],
        "threshold": [threshold, 0.0, 0.0],
        "left": [1, 0, 0],
        "right": [2, 0, 0],
        "value": [(low + high) / 2, low, high],
    }


def test_boosted_trees_score_and_explain_with_exact_contributions() -> None:
    quiet = features.NAMES.index("months_since_txn")
    balance = features.NAMES.index("log_balance")
    a = artifact()
    a["churn"] = {
        "base": -2.0,
        "trees": [stump(quiet, 2.0, -0.5, 1.5), stump(balance, 1.0, 0.4, -0.2), stump(quiet, 4.0, 0.0, 0.6)],
        "at_risk_probability": 0.2,
    }
    m = model.ScoreModel.from_artifact(a)
    assert isinstance(m.churn_model, model.Trees)
    x = [0.0] * N
    x[quiet], x[balance] = 3.3, 0.5
    # base + leaves: -2 + 1.5 + 0.4 + 0.0
    assert m.churn_model.logit(x) == pytest.approx(-0.1)
    c = m.churn_model.contributions(x)
    roots = 0.5 + 0.1 + 0.3
    assert -2.0 + roots + sum(c) == pytest.approx(m.churn_model.logit(x))  # exact in sum
    assert c[quiet] == pytest.approx(1.0 - 0.3) and c[balance] == pytest.approx(0.3)
    rules = replace(Rules(), model=m)
    churn = d.derive(facts(activity=d.Activity(last_txn_us=NOW - 100 * DAY_US)), CATALOGUE, rules).churn
    assert churn.reasons[0] == d.DORMANT and churn.model_version == "scores-test-1"


def test_trees_whose_walk_would_not_end_are_refused() -> None:
    a = artifact()
    a["churn"] = {"base": 0.0, "trees": [{**stump(0, 1.0, 0.0, 1.0), "left": [0, 0, 0]}], "at_risk_probability": 0.2}
    with pytest.raises(model.ArtifactError, match=r"churn.trees\[0\]: node 0"):
        model.ScoreModel.from_artifact(a)
    a["churn"] = {"base": 0.0, "trees": [{**stump(N, 1.0, 0.0, 1.0)}], "at_risk_probability": 0.2}
    with pytest.raises(model.ArtifactError, match="bad feature"):
        model.ScoreModel.from_artifact(a)


def pooled(**extra: object) -> dict[str, object]:
    """One offer model over (customer, product) pairs: wealth products for a big balance, the
    riskier the better while the customer's tolerance allows it."""
    a = artifact()
    del a["offers"]
    risk = N + features.OFFER_NAMES.index("wealth_risk_level")
    balance = features.NAMES.index("log_balance")
    headroom = N + features.OFFER_NAMES.index("risk_headroom")
    a["offer_features"] = list(features.OFFER_NAMES)
    a["offer"] = {
        "base": -3.0,
        "trees": [
            stump(balance, 5.0, -0.5, 1.0),
            stump(risk, 1.0, 0.0, 1.0),
            stump(risk, 3.0, 0.0, 0.5),
            stump(headroom, -0.5, -2.0, 0.0),
        ],
    }
    return {**a, **extra}


def test_one_offer_model_ranks_every_product_by_its_pair_features_within_suitability() -> None:
    rules = with_model(pooled())
    rich = facts(holdings=(deposit(5_000_000),), risk_tolerance=2)  # C2: R5 is not suitable
    offers = d.derive(rich, CATALOGUE, rules).offers
    assert {o.product_id for o in offers} <= {p.product_id for p in d.eligible_products(rich, CATALOGUE)}
    assert "wm-pe-r5" not in {o.product_id for o in offers}
    assert offers[0].product_id == "wm-bond-r2" and offers[0].model_version == "scores-test-1"
    bold = d.derive(replace(rich, risk_tolerance=5), CATALOGUE, rules).offers
    assert [o.product_id for o in bold[:2]] == ["wm-pe-r5", "wm-bond-r2"]  # the riskier fund first
    assert bold[0].reasons[0] == d.NOT_HELD and d.IDLE_BALANCE in bold[0].reasons
    m = rules.model
    assert isinstance(m, model.ScoreModel)
    x = features.vector(replace(rich, risk_tolerance=5), Rules())
    assert [o.score for o in bold] == [
        round(m.offer_probability(p, x), 4) for p in (CATALOGUE[2], CATALOGUE[1], CATALOGUE[0])
    ]


def test_an_offer_model_on_other_product_features_is_refused() -> None:
    with pytest.raises(model.ArtifactError, match="offer_features"):
        model.ScoreModel.from_artifact(pooled(offer_features=["product_risk_level"]))
    bad = pooled()
    bad["offer"] = {"base": 0.0, "trees": [stump(N + len(features.OFFER_NAMES), 1.0, 0.0, 1.0)]}
    with pytest.raises(model.ArtifactError, match="bad feature"):
        model.ScoreModel.from_artifact(bad)


def test_a_pairs_probability_and_reasons_are_the_walks() -> None:
    m = model.ScoreModel.from_artifact(pooled())
    assert m.offer_model is not None
    rng = random.Random(7)
    for _ in range(50):
        x = [rng.uniform(-1, 8) for _ in range(N)]
        x[features.NAMES.index("log_balance")] = rng.choice((4.0, 6.0))  # below and above the tree's question
        for p in CATALOGUE:
            full = m.offer_model.probability(features.offer_vector(x, p))
            assert m.offer_probability(p, x) == full  # the same leaves, added in the same order
            z = features.offer_vector(x, p)
            slow = model._reasons(m.offer_model.explain(z)[1], model._PAIR_GROUPS, 2)
            assert model.PathReasons(m.offer_model, model._PAIR_GROUPS).reasons(z, 2) == slow


def test_the_need_features_of_a_pair_ask_about_the_customer_only_for_the_family_they_drive() -> None:
    x = [0.0] * N
    x[features.NAMES.index("log_main_balance")] = 4.5
    x[features.NAMES.index("log_txn_per_month_365d")] = 2.0
    x[features.NAMES.index("tolerance_c4")] = 1.0
    x[features.NAMES.index("holds_wealth")] = 1.0
    loan = d.Product("loan-personal", "Loan", d.TYPE_LOAN, 2, d.PRODUCT_ACTIVE, 22, 60)
    term = d.Product("dep-term-12m", "Term", d.TYPE_DEPOSIT, 1, d.PRODUCT_ACTIVE, 18, 0)

    def need(p: d.Product) -> dict[str, float]:
        v = features.offer_vector(x, p)
        assert len(v) == N + len(features.OFFER_NAMES)
        return dict(zip(features.OFFER_NAMES, v[N:], strict=True))

    card, bond, pe = (need(p) for p in CATALOGUE)
    assert bond["wealth_risk_gap"] == 2.0 and pe["wealth_risk_gap"] == 1.0 and card["wealth_risk_gap"] == 0.0
    assert bond["wealth_main_balance"] == 4.5 and bond["r5_main_balance"] == 0.0 and pe["r5_main_balance"] == 4.5
    assert bond["holds_same_type"] == 1.0 and card["holds_same_type"] == 0.0
    assert card["card_engagement"] == 2.0 and bond["card_engagement"] == 0.0 and card["wealth_main_balance"] == 0.0
    assert need(loan)["loan_main_balance"] == 4.5 and need(term)["deposit_main_balance"] == 4.5
    x[features.NAMES.index("tolerance_c4")] = 0.0  # no valid assessment: as far from every fund as can be
    assert need(CATALOGUE[1])["wealth_risk_gap"] == 9.0


def random_tree(rng: random.Random, n: int, depth: int = 3) -> dict[str, list[float]]:
    """A complete tree of ``depth`` random questions on ``n`` features (node values random too)."""
    size = 2 ** (depth + 1) - 1
    inner = 2**depth - 1
    return {
        "feature": [rng.randrange(n) if i < inner else -1 for i in range(size)],
        "threshold": [rng.uniform(-1, 4) for _ in range(size)],
        "left": [2 * i + 1 if i < inner else 0 for i in range(size)],
        "right": [2 * i + 2 if i < inner else 0 for i in range(size)],
        "value": [rng.uniform(-0.6, 0.6) for _ in range(size)],
    }


def test_one_search_for_the_leaves_gives_the_walks_scores_and_reasons() -> None:
    """The churn score and reasons, and each offer's probability and reasons, from one search for
    the leaves (PathReasons) are the walk's: the same floats, the same codes."""
    rng = random.Random(11)
    a = pooled()
    a["churn"] = {"base": -1.0, "trees": [random_tree(rng, N) for _ in range(40)], "at_risk_probability": 0.3}
    a["offer"] = {"base": -2.0, "trees": [random_tree(rng, N + len(features.OFFER_NAMES)) for _ in range(30)]}
    m = model.ScoreModel.from_artifact(a)
    assert isinstance(m.churn_model, model.Trees) and m.offer_model is not None
    for _ in range(300):
        x = [rng.uniform(-1, 4) if rng.random() < 0.7 else float(rng.randint(0, 1)) for _ in range(N)]
        logit, contributions = m.churn_model.explain(x)
        assert m._churn_explain(x) == (m.churn_model.logit(x), model._reasons(contributions, model._CHURN_GROUPS, 3))
        assert logit == m.churn_model.logit(x)
        slow = sorted((-round(m.offer_probability(p, x), 4), p.product_id, p) for p in CATALOGUE)
        offers = m.rank(x, CATALOGUE, Rules())
        assert [(o.product_id, o.score) for o in offers] == [(p.product_id, -neg) for neg, _, p in slow]
        for o, (_, _, p) in zip(offers, slow, strict=True):
            z = features.offer_vector(x, p)
            assert o.reasons == (d.NOT_HELD, *model._reasons(m.offer_model.explain(z)[1], model._PAIR_GROUPS, 2))
