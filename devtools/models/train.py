"""Fit the hub's scores on snapshot rows and write the versioned artifact (services/data_hub/model.py).

- churn: gradient-boosted trees (scikit-learn's HistGradientBoosting, docs/adr/0037; or a logistic
  scorecard, :data:`CHURN_KIND`) on the features of the churn population at the training dates;
  ``at_risk_probability`` = the probability at which the top :data:`AT_RISK_SHARE` of the training
  rows are flagged (the view maps it onto the 0.5 line);
- offers: one model of boosted trees over (customer, product) pairs (docs/adr/0050): a row for
  every product the customer was eligible for and did not hold, its features the customer's
  followed by the product's (``features.offer_vector``); label = opened within 90 days. What one
  product teaches (balance, appetite, age) carries over to the others, where one model per
  product had to learn it again from its own few openings.

Deterministic: the same rows give the same artifact, byte for byte (lbfgs is deterministic; the
trees are grown on one thread with a fixed seed and no early stopping; the JSON is written with
sorted keys and rounded numbers), and its version is a hash of its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from devtools.models import dataset as dsm
from services.data_hub import features, model

AT_RISK_SHARE = 0.10
MIN_POSITIVES = 15
C = 0.5


@dataclass(frozen=True)
class Boosting:
    """How many trees, how deep, how fast (scikit-learn's names in brackets)."""

    trees: int  # (max_iter)
    depth: int  # (max_depth)
    learning_rate: float
    min_leaf: int  # (min_samples_leaf)


# Wave 6 (docs/data-hub.md, "Results"): as good on held-out seeds as 150 trees of depth 3, and
# cheaper a render (fewer trees, two questions a walk).
CHURN_TREES = Boosting(trees=100, depth=2, learning_rate=0.1, min_leaf=40)
OFFER_TREES = Boosting(trees=50, depth=3, learning_rate=0.15, min_leaf=40)
CHURN_KIND = "trees"


def _r(v: float) -> float:
    return float(f"{v:.8g}")


def _fit(z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    lr = LogisticRegression(C=C, max_iter=2000, solver="lbfgs")
    lr.fit(z, y)
    return {"coef": [_r(c) for c in lr.coef_[0]], "intercept": _r(float(lr.intercept_[0]))}


def _tree(nodes: Any) -> dict[str, list[Any]]:
    """One fitted tree as the hub's flat arrays; an inner node's value = the training rows'
    average of its leaves (what the hub's contributions are measured from)."""
    n = len(nodes)
    value = [float(v) for v in nodes["value"]]
    count = [int(c) for c in nodes["count"]]
    leaf = [bool(v) for v in nodes["is_leaf"]]
    for i in reversed(range(n)):  # children come after their parent
        if not leaf[i]:
            lo, hi = int(nodes["left"][i]), int(nodes["right"][i])
            value[i] = (count[lo] * value[lo] + count[hi] * value[hi]) / max(count[lo] + count[hi], 1)
    return {
        "feature": [-1 if leaf[i] else int(nodes["feature_idx"][i]) for i in range(n)],
        # (exact: a rounded threshold could fall on a training value and send it the other way)
        "threshold": [0.0 if leaf[i] else float(nodes["num_threshold"][i]) for i in range(n)],
        "left": [0 if leaf[i] else int(nodes["left"][i]) for i in range(n)],
        "right": [0 if leaf[i] else int(nodes["right"][i]) for i in range(n)],
        "value": [_r(v) for v in value],
    }


def boosted(x: np.ndarray, y: np.ndarray, how: Boosting) -> Any:
    """scikit-learn's HistGradientBoosting fitted on one thread, with no early stopping and a
    fixed seed: the same rows give the same trees anywhere."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    gb = HistGradientBoostingClassifier(
        max_iter=how.trees,
        learning_rate=how.learning_rate,
        max_depth=how.depth,
        min_samples_leaf=how.min_leaf,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=0,
    )
    with threadpool_limits(1):
        gb.fit(x, y)
    return gb


def _fit_trees(x: np.ndarray, y: np.ndarray, how: Boosting) -> dict[str, Any]:
    """Gradient-boosted trees on the raw features (:func:`boosted`)."""
    gb = boosted(x, y, how)
    # (the fitted trees are only reachable through ``_predictors``: scikit-learn is pinned, and the
    # export is checked against scikit-learn's own scores, so an upgrade that changes it fails here)
    out = {
        "base": _r(float(np.ravel(gb._baseline_prediction)[0])),
        "trees": [_tree(p[0].nodes) for p in gb._predictors],
    }
    hub = model.scorecard(out, [], [], "check", x.shape[1])
    sample = x[:: max(1, len(x) // 200)]
    ours = np.array([hub.logit(row) for row in sample.tolist()])
    if not np.allclose(ours, gb.decision_function(sample), atol=1e-4):
        raise RuntimeError("the exported trees do not score as scikit-learn's: check the export")
    return out


def standardizer(x: np.ndarray) -> tuple[list[float], list[float]]:
    mean, std = x.mean(axis=0), x.std(axis=0)
    return [_r(v) for v in mean], [_r(v) if v > 1e-9 else 1.0 for v in std]


def fit(ds: dsm.Dataset, dates: Sequence[int], *, training: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact (a JSON-able dict) fitted on the snapshot rows at ``dates``."""
    idx, y = dsm.churn_rows(ds, set(dates))
    if len(idx) == 0 or not y.any():
        raise ValueError("no churn examples at the training dates: a bigger population or more months")
    mean, scale = standardizer(ds.x[idx])
    zs = (ds.x - np.array(mean)) / np.array(scale)
    churn = _fit_trees(ds.x[idx], y, CHURN_TREES) if CHURN_KIND == "trees" else _fit(zs[idx], y)
    fitted = model.scorecard(churn, mean, scale, "churn")
    logits = [fitted.logit(row) for row in ds.x[idx].tolist()]  # the hub's own arithmetic
    churn["at_risk_probability"] = _r(float(1 / (1 + np.exp(-np.quantile(logits, 1 - AT_RISK_SHARE)))))
    rows, pairs, opened = offer_pairs(ds, dates)
    offer = _fit_trees(pairs, opened, OFFER_TREES) if opened.sum() >= MIN_POSITIVES else None
    artifact: dict[str, Any] = {
        "format": model.FORMAT,
        "feature_version": features.VERSION,
        "features": list(features.NAMES),
        "offer_features": list(features.OFFER_NAMES),
        "mean": mean,
        "scale": scale,
        "churn": churn,
        "offer": offer,
        "training": {
            **training,
            "churn_rows": len(idx),
            "churn_positives": int(y.sum()),
            "offer_rows": len(rows),
            "offer_pairs": len(opened),
            "offer_positives": int(opened.sum()),
        },
    }
    digest = hashlib.sha256(json.dumps(artifact, sort_keys=True).encode()).hexdigest()[:12]
    artifact["version"] = f"scores-f{features.VERSION}-{digest}"
    return artifact


def offer_pairs(ds: dsm.Dataset, dates: Sequence[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(rows, pair features, opened within 90 days): a pair for every product each row at
    ``dates`` (with its 90 days inside the data) was eligible for, in the row's order."""
    date_set = set(dates)
    rows = [i for i in range(len(ds)) if int(ds.as_of[i]) in date_set and ds.as_of[i] + dsm.XSELL_US <= ds.end_us]
    x, y = [], []
    for i in rows:
        got, customer = dsm.opened_within(ds, i), ds.x[i].tolist()
        for pid in ds.eligible[i]:
            x.append(features.offer_vector(customer, ds.catalogue[pid]))
            y.append(pid in got)
    width = len(features.NAMES) + len(features.OFFER_NAMES)
    return rows, np.array(x, dtype=np.float64).reshape(len(y), width), np.array(y, dtype=bool)


def training_info(seeds: Sequence[int], customers: int, months: int, dates: Sequence[int]) -> dict[str, Any]:
    """What the artifact records of its training (part of its content, so of its version)."""
    return {
        "seeds": list(seeds),
        "customers": customers,
        "months": months,
        "dates": [min(dates), max(dates), len(dates)],
    }


def dumps(artifact: Mapping[str, Any]) -> str:
    return json.dumps(artifact, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write(artifact: Mapping[str, Any], path: Path) -> Path:
    """Write the artifact (one file: its version is inside it, earlier versions are in git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(artifact)
    model.parse(text)  # what the hub will load: refuse to write what it would refuse
    path.write_text(text, encoding="utf-8")
    return path
