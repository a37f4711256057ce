"""Training is reproducible: the same snapshot rows give the same artifact, byte for byte, and
the hub loads what it writes (a hand-made data set; no database)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devtools.models import dataset as dsm
from devtools.models import train
from services.data_hub import features, model
from services.data_hub.domain import DAY_US
from tests.unit.data_hub.test_model import CATALOGUE


def hand_made(seed: int = 1) -> dsm.Dataset:
    rng = np.random.default_rng(seed)
    customers, months = 60, 8
    dates = [k * 30 * DAY_US for k in range(1, months + 1)]
    truth = {}
    for i in range(customers):
        leaves = i % 6 == 0
        opens = [(int(dates[2] + 10 * DAY_US), "card-classic")] if i % 4 == 0 else []
        opens += [(int(dates[4] + 5 * DAY_US), "wm-bond-r2")] if i % 5 == 0 else []
        truth[f"c{i}"] = dsm.Truth(int(dates[3] + 60 * DAY_US) if leaves else None, sorted(opens))
    rows = [(t, f"c{i}") for t in dates for i in range(customers)]
    x = rng.normal(size=(len(rows), len(features.NAMES)))
    for r, (_, cid) in enumerate(rows):
        x[r, 0] += 2.0 * (truth[cid].left_us is not None)  # months without a transaction: the leavers'
    return dsm.Dataset(
        as_of=np.array([t for t, _ in rows], dtype=np.int64),
        customer=[c for _, c in rows],
        x=x,
        rules_churn=np.zeros(len(rows)),
        held=[["dep-current"]] * len(rows),
        eligible=[["card-classic", "wm-bond-r2"]] * len(rows),
        rules_offers=[["card-classic"]] * len(rows),
        truth=truth,
        end_us=int(dates[-1] + 400 * DAY_US),
        catalogue={p.product_id: p for p in CATALOGUE},
    )


def test_retraining_on_the_same_rows_gives_the_same_artifact_and_scores(tmp_path: Path) -> None:
    ds = hand_made()
    dates = sorted({int(t) for t in ds.as_of})[:4]
    first = train.dumps(train.fit(ds, dates, training={"seeds": [1]}))
    again = train.dumps(train.fit(hand_made(), dates, training={"seeds": [1]}))
    assert first == again
    written = train.write(train.fit(ds, dates, training={"seeds": [1]}), tmp_path / "scores.json")
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]  # one copy: the version is inside it
    loaded = model.load(str(written))
    assert loaded is not None and loaded.version.startswith(f"scores-f{features.VERSION}-")
    assert isinstance(loaded.churn_model, model.Trees)
    leaver = [3.0] + [0.0] * (len(features.NAMES) - 1)
    stayer = [-1.0] + [0.0] * (len(features.NAMES) - 1)
    assert loaded.churn_probability(leaver) > loaded.churn_probability(stayer)  # learnt the leavers' feature
    assert loaded.churn_model.contributions(leaver)[0] > 0
    # one offer model over (customer, product) pairs, scored by the hub as scikit-learn scores it
    assert loaded.offer_model is not None and not loaded.offer_models
    assert written.read_text().count('"offer_features"') == 1
    # a different training set is a different version
    other = train.fit(ds, dates[:3], training={"seeds": [1]})
    assert other["version"] != loaded.version


def test_several_populations_train_as_one_data_set() -> None:
    a, b = hand_made(1), hand_made(2)
    b.customer = [f"other-{c}" for c in b.customer]  # (another seed: other customer ids)
    b.truth = {f"other-{c}": t for c, t in b.truth.items()}
    both = dsm.concat([a, b])
    assert len(both) == len(a) + len(b) and both.x.shape == (len(a) + len(b), len(features.NAMES))
    assert both.customer[len(a)] == "other-c0" and set(both.truth) == set(a.truth) | set(b.truth)
    dates = set(sorted({int(t) for t in a.as_of})[:4])
    _, y_a = dsm.churn_rows(a, dates)
    _, y_b = dsm.churn_rows(b, dates)
    _, y_both = dsm.churn_rows(both, dates)
    assert list(y_both) == [*y_a, *y_b]  # each row keeps its own population's truth
    assert dsm.concat([a]) is a
