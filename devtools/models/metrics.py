"""Back-test metrics, pure (numpy): small enough to check by hand on tiny populations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    y = np.asarray(y, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(score), kind="mergesort")
    yy = np.asarray(y, dtype=bool)[order]
    tp, fp = np.cumsum(yy), np.cumsum(~yy)
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def top_share(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> tuple[float, float]:
    """(precision, lift) in the top ``share`` of scores (lift = precision / base rate)."""
    n = len(y)
    if n == 0 or not np.any(y):
        return float("nan"), float("nan")
    k = max(1, round(n * share))
    top = np.argsort(-np.asarray(score), kind="mergesort")[:k]
    precision = float(np.asarray(y, dtype=bool)[top].mean())
    return precision, precision / float(np.mean(y))


def lift_curve(y: np.ndarray, score: np.ndarray, points: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(share of customers contacted, lift at that depth)."""
    order = np.argsort(-np.asarray(score), kind="mergesort")
    yy = np.asarray(y, dtype=bool)[order]
    base = max(float(yy.mean()), 1e-12)
    shares = np.linspace(1 / points, 1.0, points)
    lifts = np.array([yy[: max(1, round(len(yy) * s))].mean() / base for s in shares])
    return shares, lifts


def recall_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    y = np.asarray(y, dtype=bool)
    return float((np.asarray(score)[y] >= threshold).mean()) if y.any() else float("nan")


def lead_days(flags: Sequence[tuple[int, bool]], left_us: int, day_us: int) -> int | None:
    """Days between the first flag and leaving: ``flags`` are (snapshot time, flagged) before
    ``left_us``; the first flag of the last unbroken run of flags that reaches the leaving
    (None: not flagged at the last snapshot before leaving)."""
    before = sorted((t, f) for t, f in flags if t < left_us)
    if not before or not before[-1][1]:
        return None
    first = before[-1][0]
    for t, f in reversed(before):
        if not f:
            break
        first = t
    return int((left_us - first) // day_us)


def hit_rate(offered: Sequence[Sequence[str]], opened: Sequence[set[str]]) -> float:
    """Share of customers who opened at least one of the products offered to them."""
    if not offered:
        return float("nan")
    return sum(1 for o, got in zip(offered, opened, strict=True) if got.intersection(o)) / len(offered)


def percentile(values: Sequence[int], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def auc_interval(
    y: np.ndarray, score: np.ndarray, groups: Sequence[str], rounds: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap interval of the ROC AUC, resampling whole customers (``groups``: a customer's
    monthly rows move together, so the interval is not narrowed by counting one leaver 3 times)."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score)
    keys = sorted(set(groups))
    rows: dict[str, list[int]] = {k: [] for k in keys}
    for i, g in enumerate(groups):
        rows[g].append(i)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(rounds):
        pick = np.concatenate([rows[keys[k]] for k in rng.integers(0, len(keys), len(keys))]).astype(np.int64)
        a = roc_auc(y[pick], score[pick])
        if not np.isnan(a):
            aucs.append(a)
    if not aucs:
        return float("nan"), float("nan")
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))
