"""``zhongtai models ceiling``: how high could a churn score's back-test AUC go on a population?

The back-test's rows and truth (devtools/models/dataset.py: at each evaluation date T, the
customers holding something who have not left by T + 30 d; positive = left in (T + 30 d,
T + 120 d]) scored not from the hub's features but from the simulator's *hidden* state
(devtools/population.py ``Population.latents``), as it stood at T:

- whether the customer had decided to leave by T, how long before T, how (abrupt, fading to
  closed, fading asleep), the fade's length and its scheduled end, when the salary moves away;
- the hidden satisfaction and the monthly hazard it sets (x 1.8 in the first year);
- salaried or not, engagement, savings habit, tenure, the salary gaps and holidays dated ahead.

Each oracle below is the same boosted trees (scikit-learn), fitted on the training populations'
churn rows at every usable date and scored on the held-out population's evaluation rows:

- ``simulator``: every hidden trait at T;
- ``seen``: every decision already made at T seen perfectly, plus the hub's own features, but
  not the satisfaction/hazard. No event reflects the satisfaction (it only sets the chance of
  deciding), so this is about the most any score of the hub's data can reach;
- ``hindsight``: also the decisions made *after* T (not a forecast: what the truth's own noise
  leaves over).

Beside them: ``analytic`` (no fitting: decided by T first, then by the hazard) and the artifact's
own score (``--artifact``). The positives are split by when their customer decided: by T, after
T (only the hazard says anything about them), never (silent for 90 days without deciding).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from devtools.models import dataset as dsm
from devtools.models import metrics, train
from devtools.models.backtest import churn_scores, scratch_dir, split_dates
from devtools.population import Params, Population
from services.data_hub import features
from services.data_hub import model as hub_model
from services.data_hub.domain import DAY_US, MICROS, Rules

ORACLE_TREES = train.Boosting(trees=200, depth=3, learning_rate=0.05, min_leaf=40)
_TENURE = features.NAMES.index("tenure_years")
#: the hidden state at T (:func:`hidden_state`), in order
HIDDEN = (
    "decided",
    "days_since_decision",
    "abrupt",
    "asleep",
    "fade_days",
    "days_to_exit",
    "days_to_salary_move",
    "hazard",
    "satisfaction",
    "salaried",
    "engagement",
    "savings",
    "tenure_days",
    "salary_gap_days",
    "holiday_days",
)
#: ... and the decision after T (``hindsight`` only)
FUTURE = ("days_to_decision", "future_abrupt", "future_asleep", "future_fade_days")
_NOT_SATISFACTION = [i for i, n in enumerate(HIDDEN) if n not in ("hazard", "satisfaction")]
KINDS = ("decided", "later", "never")


def _us(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * MICROS)


def _days_in(spans: Sequence[tuple[datetime, datetime]], lo: int, hi: int) -> float:
    return sum(max(0, min(_us(b) or 0, hi) - max(_us(a) or 0, lo)) for a, b in spans) / DAY_US


def hidden_state(
    ds: dsm.Dataset, idx: np.ndarray, latents: dict[str, Any], params: Params
) -> tuple[np.ndarray, list[str]]:
    """(rows: :data:`HIDDEN` + :data:`FUTURE` of the rows ``idx``, each row's kind: the customer
    had decided to leave by T, decides after T, or never does)."""
    out, kinds = [], []
    for i in idx:
        t, lat = int(ds.as_of[i]), latents[ds.customer[i]]
        leave = _us(lat.leave_at)
        decided = leave is not None and leave <= t
        later = leave is not None and leave > t
        tenure = float(ds.x[i, _TENURE]) * 365
        hazard = params.leave_hazard_of(lat.satisfaction, tenure)
        moves = _us(lat.salary_stops)
        out.append(
            [
                float(decided),
                (t - leave) / DAY_US if decided and leave is not None else -1.0,
                float(decided and lat.abrupt),
                float(decided and lat.sleeps),
                lat.fade_days if decided else -1.0,
                (leave + lat.fade_days * DAY_US - t) / DAY_US if decided and leave is not None else 999.0,
                (moves - t) / DAY_US if decided and moves is not None else 999.0,
                hazard,
                lat.satisfaction,
                float(lat.salary > 0),
                lat.engagement,
                lat.savings,
                min(tenure, 2000.0),
                _days_in(lat.pauses, t - 30 * DAY_US, t + 120 * DAY_US),
                _days_in(lat.holidays, t, t + 120 * DAY_US),
                (leave - t) / DAY_US if later and leave is not None else -1.0,
                float(later and lat.abrupt),
                float(later and lat.sleeps),
                lat.fade_days if later else -1.0,
            ]
        )
        kinds.append("decided" if decided else "later" if later else "never")
    return np.array(out, dtype=np.float64).reshape(len(out), len(HIDDEN) + len(FUTURE)), kinds


@dataclass
class Rows:
    """One population's churn rows at some dates, with their hidden state."""

    x: np.ndarray  # the hub's features
    hidden: np.ndarray
    y: np.ndarray
    kind: np.ndarray

    @classmethod
    def of(cls, ds: dsm.Dataset, dates: Sequence[int], latents: dict[str, Any], params: Params) -> Rows:
        idx, y = dsm.churn_rows(ds, set(dates))
        hidden, kinds = hidden_state(ds, idx, latents, params)
        return cls(ds.x[idx], hidden, y, np.array(kinds))


_ORACLES: dict[str, Callable[[Rows], np.ndarray]] = {
    "simulator": lambda r: r.hidden[:, : len(HIDDEN)],
    "seen": lambda r: np.hstack([r.hidden[:, _NOT_SATISFACTION], r.x]),
    "hindsight": lambda r: np.hstack([r.hidden, r.x]),
}


@dataclass
class Ceiling:
    """One held-out population's AUCs: each oracle's, the artifact's, and by kind of positive."""

    seed: int
    rows: int
    positives: dict[str, int]
    auc: dict[str, float] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def line(self) -> str:
        p = self.positives
        aucs = " ".join(f"{k}_auc={v:.3f}" for k, v in self.auc.items())
        return f"ceiling: {aucs} later_deciders={p['later']}/{sum(p.values())} (seed {self.seed})"


def _fit(rows: Rows, columns: Callable[[Rows], np.ndarray]) -> Any:
    return train.boosted(columns(rows), rows.y, ORACLE_TREES)


def _concat(parts: Sequence[Rows]) -> Rows:
    return Rows(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("x", "hidden", "y", "kind")))


def measure(
    trained: Sequence[Rows], held_out: Sequence[tuple[int, Rows]], scorer: hub_model.ScoreModel | None
) -> list[Ceiling]:
    """Fit the oracles on ``trained`` and measure them (and ``scorer``) on each held-out population."""
    pooled = _concat(trained)
    fitted = {name: (_fit(pooled, cols), cols) for name, cols in _ORACLES.items()}
    out = []
    for seed, r in held_out:
        scores = {"analytic": r.hidden[:, HIDDEN.index("decided")] + r.hidden[:, HIDDEN.index("hazard")]}
        for name, (gb, cols) in fitted.items():
            scores[name] = gb.decision_function(cols(r))
        if scorer is not None:
            scores["model"] = churn_scores(scorer, r.x)
        c = Ceiling(seed, len(r.y), {k: int((r.y & (r.kind == k)).sum()) for k in KINDS})
        for name, s in scores.items():
            c.auc[name] = metrics.roc_auc(r.y, s)
            keep = {k: (r.y & (r.kind == k)) | ~r.y for k in KINDS if c.positives[k]}
            c.by_kind[name] = {k: metrics.roc_auc(r.y[m], s[m]) for k, m in keep.items()}
        out.append(c)
    return out


async def _population(seed: int, customers: int, months: int, work: Path) -> tuple[dsm.Dataset, dict[str, Any]]:
    pop = Population(seed=seed, customers=customers, months=months)
    ds = await dsm.build(pop.events(), work / f"hub-seed-{seed}.db", Rules())
    return ds, pop.latents


async def _build(seeds: Sequence[int], customers: int, months: int) -> list[tuple[dsm.Dataset, dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="zt-ceiling-", dir=scratch_dir()) as tmp:
        return [await _population(s, customers, months, Path(tmp)) for s in seeds]


def run(
    seeds: Sequence[int], train_seeds: Sequence[int], customers: int, months: int, artifact: Path | None
) -> list[Ceiling]:
    params = Params()
    built = asyncio.run(_build([*train_seeds, *seeds], customers, months))
    trained, held = built[: len(train_seeds)], built[len(train_seeds) :]
    evals = split_dates(trained[0][0])[1]  # the back-test's evaluation dates
    rows = [Rows.of(ds, dsm.churn_dates(ds), lat, params) for ds, lat in trained]
    scorer = hub_model.parse(artifact.read_text(encoding="utf-8")) if artifact else None
    return measure(
        rows, [(s, Rows.of(ds, evals, lat, params)) for s, (ds, lat) in zip(seeds, held, strict=True)], scorer
    )


def report(results: Sequence[Ceiling]) -> str:
    lines = []
    for c in results:
        p = c.positives
        lines.append(
            f"seed {c.seed}: {c.rows} rows, {sum(p.values())} positives: decided by T {p['decided']}, "
            f"after T {p['later']}, never {p['never']}"
        )
        for name, auc in c.auc.items():
            parts = ", ".join(f"{k} {v:.3f}" for k, v in c.by_kind[name].items())
            lines.append(f"  {name:<10} AUC {auc:.3f}  (each kind of positive vs all negatives: {parts})")
    lines.extend(c.line() for c in results)
    return "\n".join(lines)


def main(args: Any) -> int:
    artifact = Path(args.artifact) if args.artifact else None
    print(report(run(args.seed, args.train_seed, args.customers, args.months, artifact)))
    return 0
