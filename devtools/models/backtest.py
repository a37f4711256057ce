"""``zhongtai models backtest``: train on earlier months, evaluate on later months and on a
held-out seed, beside the rules.

1. the training population (``--train-seed``) and the evaluated one (``--seed``) are simulated
   (devtools/population.py), replayed into hub databases and snapshotted monthly
   (devtools/models/dataset.py);
2. the dates whose churn window is inside the data are split: the last ``EVAL_DATES`` are the
   evaluation dates, training uses the dates whose windows end before the first of them;
3. the model is fitted on the training population's training dates (devtools/models/train.py,
   the same code as ``zhongtai models train``) and scored at the evaluation dates of both
   populations (out of time; out of time *and* population), beside the rules' scores;
4. a table, ``<out>/backtest-seed-<N>.html`` (ROC and lift curves, matplotlib) and one line
   (:func:`summary_line`): ``backtest: churn_auc=<x> churn_top_decile_lift=<x> lead_days_p50=<n>
   xsell_hit_ratio=<x> rules_churn_auc=<x> (seed <n>)``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from devtools.models import dataset as dsm
from devtools.models import metrics, train
from devtools.population import Population
from services.data_hub import model as hub_model
from services.data_hub.domain import DAY_US, MICROS, Product, Rules

EVAL_DATES = 6
AT_RISK = 0.5  # the view's AT_RISK line (Rules.at_risk_score)


@dataclass
class Scores:
    """One population's evaluation at the evaluation dates."""

    name: str
    y: np.ndarray
    customers: list[str]
    model: np.ndarray
    rules: np.ndarray
    lead_model: list[int] = field(default_factory=list)
    lead_rules: list[int] = field(default_factory=list)
    leavers: int = 0
    xsell: dict[str, float] = field(default_factory=dict)
    cached: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        if not self.cached:
            self.cached = self._row()
        return self.cached

    def _row(self) -> dict[str, float]:
        p, lift = metrics.top_share(self.y, self.model)
        rp, rlift = metrics.top_share(self.y, self.rules)
        ci = metrics.auc_interval(self.y, self.model, self.customers)
        return {
            "rows": len(self.y),
            "positives": int(self.y.sum()),
            "auc": metrics.roc_auc(self.y, self.model),
            "auc_ci95_low": ci[0],
            "auc_ci95_high": ci[1],
            "rules_auc": metrics.roc_auc(self.y, self.rules),
            "top_decile_precision": p,
            "top_decile_lift": lift,
            "rules_top_decile_precision": rp,
            "rules_top_decile_lift": rlift,
            "recall_at_risk": metrics.recall_at(self.y, self.model, AT_RISK),
            "rules_recall_at_risk": metrics.recall_at(self.y, self.rules, AT_RISK),
            "lead_p25": metrics.percentile(self.lead_model, 25),
            "lead_p50": metrics.percentile(self.lead_model, 50),
            "lead_p75": metrics.percentile(self.lead_model, 75),
            "flagged_leavers": len(self.lead_model) / self.leavers if self.leavers else float("nan"),
            "rules_lead_p50": metrics.percentile(self.lead_rules, 50),
            "rules_flagged_leavers": len(self.lead_rules) / self.leavers if self.leavers else float("nan"),
            **self.xsell,
        }


def churn_scores(scorer: hub_model.ScoreModel, x: np.ndarray) -> np.ndarray:
    """The view's churn scores of these feature rows, computed by the hub's own code."""
    return np.array([scorer.view_score(scorer.churn_probability(row)) for row in x.tolist()])


def offer_rank(
    scorer: hub_model.ScoreModel, x: np.ndarray, eligible: list[str], catalogue: dict[str, Product], k: int = 3
) -> list[str]:
    """The model's top offers among the eligible products (the hub's ``ScoreModel.rank`` order)."""
    row = x.tolist()
    ranked = sorted((-round(scorer.offer_probability(catalogue[pid], row), 4), pid) for pid in eligible)
    return [pid for _, pid in ranked[:k]]


def popularity(ds: dsm.Dataset, dates: set[int]) -> list[str]:
    """Products by how often they were opened within 90 days of the training dates."""
    counts: Counter[str] = Counter()
    for i in range(len(ds)):
        if int(ds.as_of[i]) in dates:
            counts.update(dsm.opened_within(ds, i))
    return [pid for pid, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def evaluate(name: str, ds: dsm.Dataset, scorer: hub_model.ScoreModel, dates: list[int], popular: list[str]) -> Scores:
    idx, y = dsm.churn_rows(ds, set(dates))
    model_all = churn_scores(scorer, ds.x)
    s = Scores(name, y, [ds.customer[i] for i in idx], model_all[idx], ds.rules_churn[idx])
    # Lead time: leavers whose leaving falls in the evaluated windows, every snapshot before it.
    lo, hi = dates[0] + dsm.CHURN_FROM_DAYS * DAY_US, dates[-1] + dsm.CHURN_TO_DAYS * DAY_US
    by_customer: dict[str, list[int]] = {}
    for i, cid in enumerate(ds.customer):
        if ds.held[i]:
            by_customer.setdefault(cid, []).append(i)
    for cid, rows in by_customer.items():
        left = ds.truth[cid].left_us
        if left is None or not lo < left <= hi:
            continue
        s.leavers += 1
        for scores, leads in ((model_all, s.lead_model), (ds.rules_churn, s.lead_rules)):
            lead = metrics.lead_days([(int(ds.as_of[i]), bool(scores[i] >= AT_RISK)) for i in rows], left, DAY_US)
            if lead is not None:
                leads.append(lead)
    # Cross-sell at the evaluation dates whose 90 days are inside the data.
    xs = [
        i
        for i in range(len(ds))
        if int(ds.as_of[i]) in set(dates) and ds.eligible[i] and int(ds.as_of[i]) + dsm.XSELL_DAYS * DAY_US <= ds.end_us
    ]
    opened = [dsm.opened_within(ds, i) for i in xs]
    model_top = [offer_rank(scorer, ds.x[i], ds.eligible[i], ds.catalogue) for i in xs]
    pop_top = [[p for p in popular if p in ds.eligible[i]][:3] for i in xs]
    rules_top = [ds.rules_offers[i][:3] for i in xs]
    hit, base = metrics.hit_rate(model_top, opened), metrics.hit_rate(pop_top, opened)
    s.xsell = {
        "xsell_rows": len(xs),
        "xsell_hit": hit,
        "xsell_popularity_hit": base,
        "xsell_rules_hit": metrics.hit_rate(rules_top, opened),
        "xsell_hit_ratio": hit / base if base else float("nan"),
    }
    return s


def split_dates(ds: dsm.Dataset) -> tuple[list[int], list[int]]:
    """(training dates, evaluation dates): no training window reaches the first evaluation date."""
    usable = dsm.churn_dates(ds)
    if len(usable) < EVAL_DATES + 3:
        raise SystemExit(f"too few months for a back-test: {len(usable)} usable snapshot dates")
    evals = usable[-EVAL_DATES:]
    horizon = (dsm.CHURN_TO_DAYS + dsm.DORMANT_GAP_DAYS) * DAY_US
    trains = [t for t in usable[2:] if t + horizon <= evals[0]]
    return trains, evals


async def population(seed: int, customers: int, months: int, work: Path, rules: Rules, progress: Any) -> dsm.Dataset:
    progress(f"seed {seed}: simulate", 0, 1)
    events = Population(seed=seed, customers=customers, months=months).events()
    progress(f"seed {seed}: simulate", 1, 1)
    return await dsm.build(
        events,
        work / f"hub-seed-{seed}.db",
        rules,
        lambda stage, done, total: progress(f"seed {seed}: {stage}", done, total),
    )


def scratch_dir() -> str | None:
    """tmpfs when there is one: the replay databases are scratch, their fsyncs cost minutes."""
    shm = Path("/dev/shm")  # noqa: S108 - a private TemporaryDirectory is made inside it
    return str(shm) if shm.is_dir() else None


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / MICROS, UTC).date().isoformat()


def report_html(path: Path, results: list[Scores], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, lift_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for s in results:
        for label, score, style in (("model", s.model, "-"), ("rules", s.rules, "--")):
            fpr, tpr = metrics.roc_curve(s.y, score)
            roc_ax.plot(fpr, tpr, style, label=f"{s.name} {label} (AUC {metrics.roc_auc(s.y, score):.3f})")
            share, lift = metrics.lift_curve(s.y, score)
            lift_ax.plot(share * 100, lift, style, marker=".", label=f"{s.name} {label}")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Churn in (T+30 d, T+120 d]: ROC")
    lift_ax.axhline(1, color="grey", linestyle=":")
    lift_ax.set(xlabel="customers contacted (top %, by score)", ylabel="lift", title="Lift")
    roc_ax.legend(fontsize=7)
    lift_ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    rows = "".join(
        "<tr><th>" + s.name + "</th>" + "".join(f"<td>{v:.3f}</td>" for v in s.row().values()) + "</tr>"
        for s in results
    )
    head = "".join(f"<th>{k}</th>" for k in results[0].row())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1>"
        f"<img alt='ROC and lift curves' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
        f"<table border=1 cellpadding=3><tr><th></th>{head}</tr>{rows}</table>",
        encoding="utf-8",
    )
    return path


async def run(
    seeds: list[int], train_seeds: list[int], customers: int, months: int, out: Path, progress: Any
) -> tuple[list[Scores], dict[str, Any], Path]:
    if set(seeds) & set(train_seeds):
        raise SystemExit(f"--seed {sorted(set(seeds) & set(train_seeds))} is also a training seed: not held out")
    rules = Rules()
    with tempfile.TemporaryDirectory(prefix="zt-backtest-", dir=scratch_dir()) as tmp:
        parts = [await population(s, customers, months, Path(tmp), rules, progress) for s in train_seeds]
        held_out = [await population(seed, customers, months, Path(tmp), rules, progress) for seed in seeds]
    trained = dsm.concat(parts)
    trains, evals = split_dates(trained)
    progress("train", 0, 1)
    artifact = train.fit(trained, trains, training=train.training_info(train_seeds, customers, months, trains))
    progress("train", 1, 1)
    scorer = hub_model.ScoreModel.from_artifact(artifact)
    popular = popularity(trained, set(trains))
    results = [
        evaluate(f"seed {'+'.join(map(str, train_seeds))} later months", trained, scorer, evals, popular),
        *(evaluate(f"seed {s} (held out)", ds, scorer, evals, popular) for s, ds in zip(seeds, held_out, strict=True)),
    ]
    train.write(artifact, out / "scores.json")  # = ``zhongtai models train`` with the same arguments
    html = report_html(
        out / f"backtest-seed-{'-'.join(map(str, seeds))}.html",
        results,
        f"Back-test, evaluated {_day(evals[0])}..{_day(evals[-1])}, model {artifact['version']}",
    )
    return results, artifact, html


def summary_line(s: Scores, seed: int) -> str:
    r = s.row()
    lead = r["lead_p50"]
    return (
        f"backtest: churn_auc={r['auc']:.3f} churn_top_decile_lift={r['top_decile_lift']:.2f} "
        f"lead_days_p50={'nan' if np.isnan(lead) else round(lead)} xsell_hit_ratio={r['xsell_hit_ratio']:.2f} "
        f"rules_churn_auc={r['rules_auc']:.3f} (seed {seed})"
    )


def main(args: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        results, artifact, html = asyncio.run(
            run(args.seed, args.train_seed, args.customers, args.months, Path(args.out), progress)
        )
    table = Table(title=f"back-test (model {artifact['version']})")
    table.add_column("metric")
    for s in results:
        table.add_column(s.name, justify="right")
    for key in results[0].row():
        table.add_row(key, *(f"{s.row()[key]:.3f}" for s in results))
    Console().print(table)
    print(f"report: {html}")
    for s, seed in zip(results[1:], args.seed, strict=True):
        print(summary_line(s, seed))
    return 0
