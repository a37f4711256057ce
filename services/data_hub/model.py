"""The trained scores, as the hub runs them: a versioned artifact (JSON) of models over
:mod:`services.data_hub.features`, evaluated in plain Python. Pure (no I/O but :func:`load`).

A bank must explain every score. Two kinds of model, each with exact contributions (relative to
the average training customer) whose largest, grouped by reason code, are the reasons:

- **boosted trees** (docs/adr/0037, what ``zhongtai models train`` writes): ``logit = base +
  Σ leaf values``; a feature's contribution is the change of the node value at its questions along
  the customer's path (one walk gives the score and the reasons);
- **logistic scorecards** (docs/adr/0020, still loadable): contribution = coefficient x
  standardized value.

The hub needs no scikit-learn (training does, in devtools/models). The artifact:

    {"format": "zhongtai-scores/1", "version": "...", "feature_version": 2, "features": [...],
     "mean": [...], "scale": [...],
     "churn": {<model>, "at_risk_probability": p} | null,
     "offer_features": [...], "offer": {<trees>} | null,   (one model over pairs, ADR 0050)
     "offers": {"<product_id>": {<model>}, ...} | null,   (older: one model per product)
     "training": {...}}
    <model> = "coef": [...], "intercept": x                      (scorecard)
            | "base": x, "trees": [{"feature": [...], "threshold": [...],
                                    "left": [...], "right": [...], "value": [...]}, ...]

The churn probability is mapped onto the view's 0..1 score so that the artifact's
``at_risk_probability`` (chosen at training) lands on the rules' AT_RISK line (0.5): monotone,
so rankings and AUC are the probability's, and the lifecycle stage keeps one threshold.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.data_hub import domain, features
from services.data_hub.domain import Churn, CustomerFacts, Offer, Product, Rules

FORMAT = "zhongtai-scores/1"
#: A feature group explains a churn score if it adds at least this much to the log-odds.
MIN_REASON_LOGIT = 0.15
MAX_REASONS = 3


class ArtifactError(ValueError):
    """The model artifact cannot be used (wrong format, feature version or shape)."""


@dataclass(frozen=True)
class Logistic:
    """One scorecard, with the standardization folded in: ``logit = b + Σ w·x`` on the raw
    features (``w = coef / scale``, ``b = intercept - Σ w·mean``); a feature's contribution is
    ``w·x - w·mean`` (= coef × its standardized value)."""

    w: tuple[float, ...]
    b: float
    shift: tuple[float, ...]  # w·mean per feature

    @classmethod
    def of(cls, coef: Sequence[float], intercept: float, mean: Sequence[float], scale: Sequence[float]) -> Logistic:
        w = tuple(c / s for c, s in zip(coef, scale, strict=True))
        shift = tuple(wi * m for wi, m in zip(w, mean, strict=True))
        return cls(w, intercept - math.fsum(shift), shift)

    def logit(self, x: Sequence[float]) -> float:
        return self.b + sum(map(operator.mul, self.w, x))

    def probability(self, x: Sequence[float]) -> float:
        return _sigmoid(self.logit(x))

    def contributions(self, x: Sequence[float]) -> list[float]:
        return [wi * xi - si for wi, xi, si in zip(self.w, x, self.shift, strict=True)]

    def explain(self, x: Sequence[float]) -> tuple[float, list[float]]:
        """(logit, contributions)."""
        return self.logit(x), self.contributions(x)


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))


@dataclass(frozen=True)
class Tree:
    """One regression tree of a boosted ensemble, as flat arrays (node 0 is the root): an inner
    node sends ``x`` left when ``x[feature] <= threshold``; ``feature`` is -1 at a leaf. ``value``
    is the leaf's addition to the log-odds, and at an inner node the training rows' average of its
    leaves (what the tree adds before that node's question is asked)."""

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]


@dataclass(frozen=True)
class Trees:
    """Gradient-boosted trees (docs/adr/0037): ``logit = base + Σ tree(x)``. A feature's
    contribution is the sum, over every tree, of the changes of the node value along ``x``'s path
    at that feature's questions (Saabas): exact in sum (``base + Σ root values + Σ
    contributions = logit``), relative to the average training row like the scorecards'."""

    base: float
    trees: tuple[Tree, ...]

    def logit(self, x: Sequence[float]) -> float:
        total = self.base
        for t in self.trees:
            f, i = t.feature, 0
            while f[i] >= 0:
                i = t.left[i] if x[f[i]] <= t.threshold[i] else t.right[i]
            total += t.value[i]
        return total

    def probability(self, x: Sequence[float]) -> float:
        return _sigmoid(self.logit(x))

    def contributions(self, x: Sequence[float]) -> list[float]:
        return self.explain(x)[1]

    def explain(self, x: Sequence[float]) -> tuple[float, list[float]]:
        """(logit, contributions) in one walk (the logit added up as :meth:`logit` does)."""
        out = [0.0] * len(x)
        total = self.base
        for t in self.trees:
            f, v, i = t.feature, t.value, 0
            while f[i] >= 0:
                nxt = t.left[i] if x[f[i]] <= t.threshold[i] else t.right[i]
                out[f[i]] += v[nxt] - v[i]
                i = nxt
            total += v[i]
        return total, out


def _leaf(t: Tree, i: int = 0) -> str:
    """Node ``i`` of ``t`` as a Python expression of ``x`` giving the index of the leaf it reaches.
    Built only from the numbers :func:`_tree` parsed (ints and finite floats: ``repr`` gives
    literals)."""
    if t.feature[i] < 0:
        return str(i)
    return f"({_leaf(t, t.left[i])} if x[{t.feature[i]}] <= {t.threshold[i]!r} else {_leaf(t, t.right[i])})"


class PathReasons:
    """The reasons of boosted trees, fast: a tree's contributions depend only on the leaf ``x``
    reaches, so each leaf's are summed per reason code once, here; explaining ``x`` finds its
    leaves (one compiled Python expression of the trees' questions, :func:`_leaf`) and adds up
    their rows. The same
    sums as :meth:`Trees.explain` grouped by :func:`_reasons` (added in another order).
    :meth:`explain` also gives the logit from the same leaves: the same float as
    :meth:`Trees.logit` (the same leaf values added in the same order)."""

    def __init__(self, trees: Trees, groups: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
        self.codes = tuple(code for code, _ in groups)
        group_of = {i: g for g, (_, idx) in enumerate(groups) for i in idx}
        self.base = trees.base
        self.values = tuple(t.value for t in trees.trees)
        self.rows = tuple(self._rows(t, group_of) for t in trees.trees)
        body = ", ".join(_leaf(t) for t in trees.trees)
        self.leaves: Callable[[Sequence[float]], tuple[int, ...]] = eval(  # noqa: S307 - numbers only (see _leaf)
            compile(f"lambda x: ({body},)", "<leaves>", "eval")
        )

    def _rows(self, t: Tree, group_of: Mapping[int, int]) -> dict[int, tuple[float, ...]]:
        rows: dict[int, tuple[float, ...]] = {}
        stack = [(0, (0.0,) * len(self.codes))]
        while stack:
            i, acc = stack.pop()
            if t.feature[i] < 0:
                rows[i] = acc
                continue
            g = group_of.get(t.feature[i])
            for nxt in (t.left[i], t.right[i]):
                step = t.value[nxt] - t.value[i]
                stack.append((nxt, acc if g is None else (*acc[:g], acc[g] + step, *acc[g + 1 :])))
        return rows

    def reasons(self, x: Sequence[float], limit: int) -> tuple[str, ...]:
        return self.ranked(self.leaves(x), limit)

    def explain(self, x: Sequence[float], limit: int) -> tuple[float, tuple[str, ...]]:
        """(logit, reasons) from one search for ``x``'s leaves."""
        logit, leaves = self.search(x)
        return logit, self.ranked(leaves, limit)

    def search(self, x: Sequence[float]) -> tuple[float, tuple[int, ...]]:
        """(logit, the leaves ``x`` reaches): the reasons can follow from the leaves later."""
        leaves = self.leaves(x)
        logit = self.base
        for value, leaf in zip(self.values, leaves, strict=True):
            logit += value[leaf]
        return logit, leaves

    def ranked(self, leaves: tuple[int, ...], limit: int) -> tuple[str, ...]:
        """The reasons of the path through ``leaves`` (:meth:`search`)."""
        sums = map(sum, zip(*[rows[leaf] for rows, leaf in zip(self.rows, leaves, strict=True)], strict=True))
        ranked = sorted((-v, code) for v, code in zip(sums, self.codes, strict=True) if v >= MIN_REASON_LOGIT)
        return tuple(code for _, code in ranked[:limit])


Scorecard = Logistic | Trees


def _groups(codes: Mapping[str, str], names: Sequence[str] = features.NAMES) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(reason code, the indexes of its features), codes in name order."""
    by_code: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name in codes:
            by_code.setdefault(codes[name], []).append(i)
    return tuple((code, tuple(idx)) for code, idx in sorted(by_code.items()))


_CHURN_GROUPS, _OFFER_GROUPS = _groups(features.CHURN_REASON), _groups(features.OFFER_REASON)
_PAIR_GROUPS = _groups(
    {**features.OFFER_REASON, **features.OFFER_PRODUCT_REASON}, features.NAMES + features.OFFER_NAMES
)


def _reasons(c: Sequence[float], groups: tuple[tuple[str, tuple[int, ...]], ...], limit: int) -> tuple[str, ...]:
    """Codes of the feature groups whose contributions ``c`` push the score up most (ties: the
    code's name)."""
    ranked = []
    for code, idx in groups:
        v = sum([c[i] for i in idx])
        if v >= MIN_REASON_LOGIT:
            ranked.append((-v, code))
    ranked.sort()
    return tuple(code for _, code in ranked[:limit])


def _tree(d: Mapping[str, Any], n: int, where: str) -> Tree:
    t = Tree(
        tuple(int(v) for v in d["feature"]),
        tuple(float(v) for v in d["threshold"]),
        tuple(int(v) for v in d["left"]),
        tuple(int(v) for v in d["right"]),
        tuple(float(v) for v in d["value"]),
    )
    size = len(t.feature)
    if not all(map(math.isfinite, t.threshold + t.value)):
        raise ArtifactError(f"{where}: thresholds and values must be finite numbers")
    if not size or any(len(a) != size for a in (t.threshold, t.left, t.right, t.value)):
        raise ArtifactError(f"{where}: feature/threshold/left/right/value must have one value per node")
    for i, f in enumerate(t.feature):  # children after their parent: every walk ends at a leaf
        if f >= n or (f >= 0 and not (i < t.left[i] < size and i < t.right[i] < size)):
            raise ArtifactError(f"{where}: node {i} has a bad feature or child index")
    return t


def scorecard(
    d: Mapping[str, Any], mean: Sequence[float], scale: Sequence[float], where: str, n: int = len(features.NAMES)
) -> Scorecard:
    """A logistic scorecard (``coef``, ``intercept``) or boosted trees (``trees``, ``base``) over
    ``n`` features."""
    if "trees" in d:
        return Trees(float(d["base"]), tuple(_tree(t, n, f"{where}.trees[{k}]") for k, t in enumerate(d["trees"])))
    coef = tuple(float(x) for x in d["coef"])
    if len(coef) != n:
        raise ArtifactError(f"{where}.coef: {len(coef)} values for {n} features")
    return Logistic.of(coef, float(d["intercept"]), mean, scale)


@dataclass(frozen=True)
class ScoreModel:
    """A loaded artifact (implements :class:`services.data_hub.domain.ScoreModel`)."""

    version: str
    churn_model: Scorecard | None
    at_risk_probability: float
    offer_models: Mapping[str, Scorecard]
    #: the one offer model over (customer, product) pairs (ADR 0050); ``offer_models`` (one per
    #: product) are what older artifacts have
    offer_model: Trees | None = None
    _pair_reasons: list[PathReasons] = field(default_factory=list, compare=False, repr=False)
    #: the churn trees' leaves, logits and reasons (:class:`PathReasons`), built on first use
    _churn_paths: list[PathReasons] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_artifact(cls, data: Mapping[str, Any]) -> ScoreModel:
        if data.get("format") != FORMAT:
            raise ArtifactError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        if data.get("feature_version") != features.VERSION or tuple(data.get("features", ())) != features.NAMES:
            raise ArtifactError(
                f"features: trained on version {data.get('feature_version')!r}, the hub computes "
                f"version {features.VERSION} ({len(features.NAMES)} features)"
            )
        n = len(features.NAMES)
        mean, scale = tuple(float(x) for x in data["mean"]), tuple(float(x) or 1.0 for x in data["scale"])
        if len(mean) != n or len(scale) != n:
            raise ArtifactError(f"mean/scale: expected {n} values each")

        churn, offers, pooled = data.get("churn"), data.get("offers") or {}, data.get("offer")
        if pooled and tuple(data.get("offer_features", ())) != features.OFFER_NAMES:
            raise ArtifactError(f"offer_features: the hub computes {list(features.OFFER_NAMES)}")
        offer_model = scorecard(pooled, (), (), "offer", n + len(features.OFFER_NAMES)) if pooled else None
        if offer_model is not None and not isinstance(offer_model, Trees):
            raise ArtifactError("offer: boosted trees expected (trees, base)")
        return cls(
            version=str(data["version"]),
            churn_model=scorecard(churn, mean, scale, "churn") if churn else None,
            at_risk_probability=float(churn["at_risk_probability"]) if churn else 0.5,
            offer_models={pid: scorecard(m, mean, scale, f"offers.{pid}") for pid, m in offers.items()},
            offer_model=offer_model,
        )

    def churn_probability(self, x: Sequence[float]) -> float:
        assert self.churn_model is not None
        return self.churn_model.probability(x)

    def view_score(self, probability: float) -> float:
        """The probability on the view's scale: ``at_risk_probability`` -> 0.5 (monotone)."""
        t = min(max(self.at_risk_probability, 1e-6), 1 - 1e-6)
        if probability < t:
            return round(0.5 * probability / t, 4)
        return round(0.5 + 0.5 * (probability - t) / (1 - t), 4)

    def score(
        self, facts: CustomerFacts, candidates: Sequence[Product], rules: Rules
    ) -> tuple[Churn | None, tuple[Offer, ...] | None]:
        churn_on = self.churn_model is not None and features.scorable(facts)
        offers_on = (bool(self.offer_models) or self.offer_model is not None) and bool(candidates)
        if not churn_on and not offers_on:
            return None, None
        x = features.vector(facts, rules)
        churn = None
        if self.churn_model is not None and churn_on:
            logit, reasons = self._churn_explain(x)
            churn = Churn(self.view_score(_sigmoid(logit)), reasons, self.version)
        return churn, (self.rank(x, candidates, rules) if offers_on else None)

    def _churn_explain(self, x: Sequence[float]) -> tuple[float, tuple[str, ...]]:
        """The churn logit and its reasons: for trees from one search for the leaves
        (:class:`PathReasons`), for a scorecard from its contributions."""
        m = self.churn_model
        if isinstance(m, Trees):
            if not self._churn_paths:
                self._churn_paths.append(PathReasons(m, _CHURN_GROUPS))
            return self._churn_paths[0].explain(x, MAX_REASONS)
        assert m is not None
        logit, contributions = m.explain(x)
        return logit, _reasons(contributions, _CHURN_GROUPS, MAX_REASONS)

    def offer_probability(self, product: Product, x: Sequence[float]) -> float:
        """The probability that the customer opens ``product`` within 90 days (0 for a product
        an older artifact has no model for: it ranks last); :meth:`rank`'s, to the bit."""
        if self.offer_model is not None:
            return _sigmoid(self._pair_paths().search(features.offer_vector(x, product))[0])
        m = self.offer_models.get(product.product_id)
        return m.probability(x) if m is not None else 0.0

    def rank(self, x: Sequence[float], candidates: Sequence[Product], rules: Rules) -> tuple[Offer, ...]:
        """Eligible candidates by the probability of opening them; reasons for the ones shown.
        With the one model over pairs, each candidate's leaves are searched once: they give its
        probability (the same float as :meth:`offer_probability`) and, if shown, its reasons."""
        if self.offer_model is None:
            return self._rank_per_product(x, candidates, rules)
        paths = self._pair_paths()
        found = []
        for p in candidates:
            logit, leaves = paths.search(features.offer_vector(x, p))
            found.append((-round(_sigmoid(logit), 4), p.product_id, p, leaves))
        found.sort(key=operator.itemgetter(0, 1))
        return tuple(
            Offer(p.product_id, -neg, (domain.NOT_HELD, *paths.ranked(leaves, 2)), p.type, p.display_name, self.version)
            for neg, _, p, leaves in found[: rules.max_offers]
        )

    def _pair_paths(self) -> PathReasons:
        """The one offer model's leaves, logits and reasons (built on first use)."""
        assert self.offer_model is not None
        if not self._pair_reasons:
            self._pair_reasons.append(PathReasons(self.offer_model, _PAIR_GROUPS))
        return self._pair_reasons[0]

    def _rank_per_product(self, x: Sequence[float], candidates: Sequence[Product], rules: Rules) -> tuple[Offer, ...]:
        """:meth:`rank` with an older artifact's model per product."""
        ranked = sorted((-round(self.offer_probability(p, x), 4), p.product_id, p) for p in candidates)
        out = []
        for neg, _, p in ranked[: rules.max_offers]:
            m = self.offer_models.get(p.product_id)
            reasons = _reasons(m.explain(x)[1], _OFFER_GROUPS, 2) if m is not None else ()
            out.append(Offer(p.product_id, -neg, (domain.NOT_HELD, *reasons), p.type, p.display_name, self.version))
        return tuple(out)


def parse(text: str) -> ScoreModel:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"not JSON: {exc}") from exc
    try:
        return ScoreModel.from_artifact(data)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"missing or malformed field: {exc}") from exc


def load(path: str) -> ScoreModel | None:
    """The artifact at ``path``; None when no path is set or no file is there (the rules score).
    A file that is there but unusable raises :class:`ArtifactError` (start-up stops)."""
    if not path or not Path(path).is_file():
        return None
    try:
        return parse(Path(path).read_text(encoding="utf-8"))
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
