"""Benchmark: CPU of the view's derived part per render, the rules vs the trained scores (not a test).

The ingest benchmark (bench/data_hub_ingest.py --compare-model) measures the whole hub per event;
this isolates what the model adds to one render (`domain.derive`: features, churn scorecard, the
offer scorecards of the eligible products), alternating rules and model rounds on the same facts.

    .venv/bin/python bench/data_hub_scoring.py [--artifact models/scores.json [OTHER.json ...]] [--customers 2000]
                                                  [--rounds 5]

Several artifacts (an old and a new model) are measured in the same rounds, side by side.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from devtools.synth import catalogue  # noqa: E402
from services.data_hub import domain as d  # noqa: E402
from services.data_hub import model  # noqa: E402
from services.data_hub.domain import DAY_US, MICROS, Rules  # noqa: E402

NOW = 1_750_000_000 * MICROS


def population(n: int, seed: int = 1) -> list[d.CustomerFacts]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        holdings = tuple(
            d.Holding(
                f"s{i}-{k}",
                pid,
                ptype,
                "CNY",
                int(rng.lognormvariate(11, 1.5)) * MICROS,
                d.HOLDING_OPEN,
                NOW - rng.randint(30, 900) * DAY_US,
                None,
            )
            for k, (pid, ptype) in enumerate(
                rng.sample(
                    [("dep-current", 1), ("dep-term-12m", 1), ("card-classic", 4), ("wm-bond-r2", 3)], rng.randint(1, 3)
                )
            )
        )
        c30 = rng.randint(0, 15)
        activity = d.Activity(
            count_30d=c30,
            count_90d=c30 * 3,
            count_365d=c30 * 12,
            amount_30d_micros=c30 * 900 * MICROS,
            amount_90d_micros=c30 * 2_700 * MICROS,
            last_txn_us=NOW - rng.randint(0, 60) * DAY_US,
            count_baseline=rng.randint(0, 45),
            credit_count_90d=rng.randint(0, 6),
            credit_amount_90d_micros=rng.randint(0, 60_000) * MICROS,
        )
        out.append(
            d.CustomerFacts(
                f"c{i}",
                True,
                d.STATUS_ACTIVE,
                True,
                rng.randint(1, 5),
                NOW + 200 * DAY_US,
                rng.randint(1955, 2003),
                NOW - rng.randint(100, 2000) * DAY_US,
                NOW,
                holdings,
                activity,
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", nargs="+", default=[str(REPO / "models" / "scores.json")])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scorers = [model.load(a) for a in args.artifact]
    if None in scorers:
        raise SystemExit(f"no artifact at {args.artifact[scorers.index(None)]}: zhongtai models train")
    facts = population(args.customers)
    products = [
        d.Product(
            p.product_id,
            p.display_name,
            p.type,
            p.risk_level,
            d.PRODUCT_ACTIVE,
            p.eligibility.min_age,
            p.eligibility.max_age,
        )
        for p in catalogue(datetime.now(UTC))
    ]
    chosen = {"rules": Rules(), **{s.version: replace(Rules(), model=s) for s in scorers if s is not None}}
    us: dict[str, list[float]] = {label: [] for label in chosen}
    for r in range(args.rounds):
        for label in list(chosen) if r % 2 == 0 else list(reversed(chosen)):
            started = time.process_time()
            for f in facts:
                d.derive(f, products, chosen[label])
            us[label].append((time.process_time() - started) / len(facts) * 1e6)
    rules_us = statistics.median(us["rules"])
    print(f"derive per render (CPU, median of {args.rounds}): rules {rules_us:.1f} µs")
    for label in list(chosen)[1:]:
        model_us = statistics.median(us[label])
        print(f"  model {label}: {model_us:.1f} µs (+{model_us - rules_us:.1f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
