"""Fit the hub's scores on snapshot rows and write the versioned artifact (services/data_hub/model.py).

- churn: logistic regression (scikit-learn, L2, lbfgs) on the standardized features of the churn
  population at the training dates; ``at_risk_probability`` = the probability at which the top
  :data:`AT_RISK_SHARE` of the training rows are flagged (the view maps it onto the 0.5 line);
- offers: one logistic regression per product, on the rows where that product was eligible and
  not held; label = opened within 90 days. Products with fewer than :data:`MIN_POSITIVES`
  openings get no model (the rules' ranking applies to them... they rank last).

Deterministic: the same rows give the same artifact, byte for byte (lbfgs is deterministic, the
JSON is written with sorted keys and rounded numbers), and its version is a hash of its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from devtools.models import dataset as dsm
from services.data_hub import features, model

AT_RISK_SHARE = 0.10
MIN_POSITIVES = 15
C = 0.5


def _r(v: float) -> float:
    return float(f"{v:.8g}")


def _fit(z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    lr = LogisticRegression(C=C, max_iter=2000, solver="lbfgs")
    lr.fit(z, y)
    return {"coef": [_r(c) for c in lr.coef_[0]], "intercept": _r(float(lr.intercept_[0]))}


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
    churn = _fit(zs[idx], y)
    logits = zs[idx] @ np.array(churn["coef"]) + churn["intercept"]
    churn["at_risk_probability"] = _r(float(1 / (1 + np.exp(-np.quantile(logits, 1 - AT_RISK_SHARE)))))
    offers: dict[str, Any] = {}
    date_set = set(dates)
    rows = [
        i for i in range(len(ds)) if int(ds.as_of[i]) in date_set and ds.as_of[i] + 90 * 86_400_000_000 <= ds.end_us
    ]
    opened = {i: dsm.opened_within(ds, i) for i in rows}
    products = sorted({p for i in rows for p in ds.eligible[i]})
    for pid in products:
        cand = [i for i in rows if pid in ds.eligible[i]]
        yy = np.array([pid in opened[i] for i in cand], dtype=bool)
        if yy.sum() >= MIN_POSITIVES and (~yy).sum() >= MIN_POSITIVES:
            offers[pid] = _fit(zs[cand], yy)
    artifact: dict[str, Any] = {
        "format": model.FORMAT,
        "feature_version": features.VERSION,
        "features": list(features.NAMES),
        "mean": mean,
        "scale": scale,
        "churn": churn,
        "offers": offers,
        "training": {**training, "churn_rows": len(idx), "churn_positives": int(y.sum()), "offer_rows": len(rows)},
    }
    digest = hashlib.sha256(json.dumps(artifact, sort_keys=True).encode()).hexdigest()[:12]
    artifact["version"] = f"scores-f{features.VERSION}-{digest}"
    return artifact


def training_info(seed: int, customers: int, months: int, dates: Sequence[int]) -> dict[str, Any]:
    """What the artifact records of its training (part of its content, so of its version)."""
    return {"seeds": [seed], "customers": customers, "months": months, "dates": [min(dates), max(dates), len(dates)]}


def dumps(artifact: Mapping[str, Any]) -> str:
    return json.dumps(artifact, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write(artifact: Mapping[str, Any], path: Path) -> Path:
    """Write the artifact; also keeps ``<dir>/<version>.json`` beside it (versions are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(artifact)
    model.parse(text)  # what the hub will load: refuse to write what it would refuse
    path.write_text(text, encoding="utf-8")
    (path.parent / f"{artifact['version']}.json").write_text(text, encoding="utf-8")
    return path
