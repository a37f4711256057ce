"""``zhongtai models crossval``: judge a change to the offer model on the training populations
only, never on the held-out seeds (docs/adr/0056).

Leave one training population out: the offer model (``train.offer_pairs`` + ``train.boosted``, the
artifact's own code) is fitted on the other populations' training dates; the left-out population
is ranked at *its* training dates (another population, the same months: nothing of the back-test's
evaluation months is looked at), its top 3 eligible products against popularity learnt from the
fitted populations (``backtest.popularity``). Pooled over the folds: the sum of the model's hits
over the sum of popularity's. A change is kept when the pooled ratio rises beyond the noise
(docs/data-hub.md, "Results", wave 9). Beside it, hindsight's: the rows where any eligible product
was opened (offering exactly those: what no score can beat), over popularity's hits — the room left.

The ranking is scikit-learn's probability rounded as the hub rounds it (``backtest.offer_rank``:
4 places, ties by product id); the exported trees score the same (``train`` checks it).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devtools.models import backtest, train
from devtools.models import dataset as dsm
from services.data_hub import features


@dataclass(frozen=True)
class Fold:
    """One left-out population: rows ranked, hits of the model's and of popularity's top 3."""

    seed: int
    rows: int
    hits: int
    popularity_hits: int
    hindsight_hits: int = 0  # rows where an eligible product was opened (the most any top 3 can hit)

    @property
    def ratio(self) -> float:
        return self.hits / self.popularity_hits if self.popularity_hits else float("nan")

    @property
    def hindsight_ratio(self) -> float:
        return self.hindsight_hits / self.popularity_hits if self.popularity_hits else float("nan")


def _rows(ds: dsm.Dataset, dates: set[int]) -> list[int]:
    return [
        i
        for i in range(len(ds))
        if int(ds.as_of[i]) in dates and ds.eligible[i] and int(ds.as_of[i]) + dsm.XSELL_US <= ds.end_us
    ]


def fold(fitted: Sequence[dsm.Dataset], left_out: dsm.Dataset, seed: int, how: train.Boosting) -> Fold:
    """Fit on ``fitted``'s training dates, rank ``left_out`` at its own training dates."""
    ds = dsm.concat(fitted)
    dates = backtest.split_dates(ds)[0]
    _, pairs, opened = train.offer_pairs(ds, dates)
    gb = train.boosted(pairs, opened, how)
    popular = backtest.popularity(ds, set(dates))
    rows = _rows(left_out, set(backtest.split_dates(left_out)[0]))
    cat = left_out.catalogue
    x = [features.offer_vector(left_out.x[i].tolist(), cat[pid]) for i in rows for pid in left_out.eligible[i]]
    p = iter(gb.predict_proba(np.array(x, dtype=np.float64))[:, 1].tolist() if x else [])
    hits = base = best = 0
    for i in rows:
        got, eligible = dsm.opened_within(left_out, i), left_out.eligible[i]
        ranked = sorted((-round(next(p), 4), pid) for pid in eligible)  # (backtest.offer_rank's order)
        hits += bool(got & {pid for _, pid in ranked[:3]})
        base += bool(got & set([pid for pid in popular if pid in eligible][:3]))
        best += bool(got & set(eligible))
    return Fold(seed, len(rows), hits, base, best)


def measure(parts: Sequence[dsm.Dataset], seeds: Sequence[int], how: train.Boosting = train.OFFER_TREES) -> list[Fold]:
    """One fold per training population (``parts[k]`` simulated from ``seeds[k]``)."""
    return [fold([d for j, d in enumerate(parts) if j != k], parts[k], seeds[k], how) for k in range(len(parts))]


def summary_line(folds: Sequence[Fold]) -> str:
    base = max(sum(f.popularity_hits for f in folds), 1)
    pooled, best = sum(f.hits for f in folds) / base, sum(f.hindsight_hits for f in folds) / base
    each = " ".join(f"{f.seed}={f.ratio:.3f}" for f in folds)
    return (
        f"crossval: xsell_hit_ratio={pooled:.4f} hindsight={best:.4f} folds {each}"
        " (left out in turn, training dates only)"
    )


def main(args: Any) -> int:
    from devtools.population import Population
    from services.data_hub.domain import Rules

    async def build() -> list[dsm.Dataset]:
        parts = []
        with tempfile.TemporaryDirectory(prefix="zt-crossval-", dir=backtest.scratch_dir()) as tmp:
            for seed in args.seed:
                events = Population(seed=seed, customers=args.customers, months=args.months).events()
                parts.append(await dsm.build(events, Path(tmp) / f"hub-{seed}.db", Rules()))
        return parts

    parts = asyncio.run(build())
    folds = measure(parts, args.seed)
    for f in folds:
        print(
            f"seed {f.seed} left out: {f.rows} rows, hits {f.hits} (popularity {f.popularity_hits}, hindsight"
            f" {f.hindsight_hits}), {f.ratio:.3f} (hindsight {f.hindsight_ratio:.3f})"
        )
    print(summary_line(folds))
    return 0
