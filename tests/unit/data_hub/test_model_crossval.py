"""The offer model's cross-validation over the training populations (devtools/models/crossval.py):
one fold per population, each ranked at its own training dates by a model that never saw it
(hand-made populations; no database)."""

from __future__ import annotations

import numpy as np

from devtools.models import crossval, train
from devtools.models import dataset as dsm
from services.data_hub import domain as d
from services.data_hub import features
from services.data_hub.domain import DAY_US

CATALOGUE = [
    d.Product("card-classic", "Card", d.TYPE_CARD, 2, d.PRODUCT_ACTIVE, 18, 65),
    d.Product("wm-bond-r2", "Bond fund R2", d.TYPE_WEALTH, 2, d.PRODUCT_ACTIVE, 18, 0),
    d.Product("wm-cash-r1", "Cash R1", d.TYPE_WEALTH, 1, d.PRODUCT_ACTIVE, 18, 0),
    d.Product("dep-term-12m", "Term", d.TYPE_DEPOSIT, 1, d.PRODUCT_ACTIVE, 18, 0),
    d.Product("loan-personal", "Loan", d.TYPE_LOAN, 2, d.PRODUCT_ACTIVE, 22, 60),
]
MAIN = features.NAMES.index("log_main_balance")


def population(seed: int, customers: int = 60, months: int = 20) -> dsm.Dataset:
    """Anyone opens the card, the bond fund or the cash fund now and then (the most opened
    products: popularity's pick); a quarter of the customers (a big balance) almost surely open a
    term deposit within 90 days, another quarter (a small one) a loan."""
    rng = np.random.default_rng(seed)
    dates = [k * 30 * DAY_US for k in range(1, months + 1)]
    end = dates[-1] + 400 * DAY_US
    chance = {"card-classic": 0.45, "wm-bond-r2": 0.4, "wm-cash-r1": 0.35}  # within 90 days
    need = ("dep-term-12m", "loan-personal", None, None)
    truth, main = {}, {}
    for i in range(customers):
        cid = f"s{seed}c{i}"
        rates = {pid: -np.log(1 - q) / (90 * DAY_US) for pid, q in chance.items()}
        needed = need[i % 4]
        if needed is not None:
            rates[needed] = -np.log(1 - 0.9) / (90 * DAY_US)
        opens = []
        for pid, rate in rates.items():
            t = rng.exponential(1 / rate)
            while t < end:
                opens.append((int(t), pid))
                t += rng.exponential(1 / rate)
        truth[cid] = dsm.Truth(None, sorted(opens))
        main[cid] = (6.0, 1.0, 3.5, 3.5)[i % 4]
    rows = [(t, cid) for t in dates for cid in truth]
    x = rng.normal(size=(len(rows), len(features.NAMES)))
    x[:, MAIN] = [main[cid] for _, cid in rows]
    n, ids = len(rows), [p.product_id for p in CATALOGUE]
    catalogue = {p.product_id: p for p in CATALOGUE}
    times = np.array([t for t, _ in rows], dtype=np.int64)
    # (as_of, customer, x, rules_churn, held, eligible, rules_offers, truth, end_us, catalogue)
    return dsm.Dataset(
        times,
        [c for _, c in rows],
        x,
        np.zeros(n),
        [["dep-current"]] * n,
        [ids] * n,
        [[]] * n,
        truth,
        int(end),
        catalogue,
    )


def test_each_population_is_ranked_at_its_training_dates_by_a_model_fitted_on_the_others() -> None:
    parts = [population(s) for s in (1, 2, 3)]
    small = train.Boosting(trees=10, depth=2, learning_rate=0.3, min_leaf=5)
    folds = crossval.measure(parts, [1, 2, 3], small)
    assert [f.seed for f in folds] == [1, 2, 3]
    # the rows of its own training dates only (the back-test's evaluation months are not looked at)
    from devtools.models.backtest import split_dates

    trains, evals = split_dates(parts[0])
    assert folds[0].rows == 60 * len(trains) and evals[0] > max(trains)
    # popularity offers the card and the funds; the model learnt who opens the deposit or the loan
    assert all(f.ratio > 1.05 for f in folds), folds
    line = crossval.summary_line(folds)
    assert line.startswith("crossval: xsell_hit_ratio=") and "1=" in line and line.endswith("training dates only)")
    # hindsight: the rows where an eligible product was opened, counted from the truth itself
    for f, ds in zip(folds, parts, strict=True):
        rows = [i for i in range(len(ds)) if int(ds.as_of[i]) in set(trains)]
        assert f.hindsight_hits == sum(bool(dsm.opened_within(ds, i) & set(ds.eligible[i])) for i in rows)
        # no top 3 beats it; popularity misses the deposit and loan openers
        assert f.hits <= f.hindsight_hits and f.popularity_hits < f.hindsight_hits
    best = sum(f.hindsight_hits for f in folds) / sum(f.popularity_hits for f in folds)
    assert f"hindsight={best:.4f}" in line
    # the same rows give the same folds
    assert crossval.measure([population(s) for s in (1, 2, 3)], [1, 2, 3], small) == folds
