"""The trained scores, as the hub runs them: a versioned artifact (JSON) of logistic models over
:mod:`services.data_hub.features`, evaluated in plain Python. Pure (no I/O but :func:`load`).

Why logistic scorecards (docs/adr/0020): a bank must explain every score. With a linear model
over standardized features the contribution of each feature is exact (coefficient x standardized
value, relative to the average training customer), so the reason codes are the codes of the
largest contributions, not an approximation; scoring is ~20 multiplications per model, cheap
enough to run on every view render (the hub needs no scikit-learn: training does, in
devtools/models). The artifact is written by ``zhongtai models train``:

    {"format": "zhongtai-scores/1", "version": "...", "feature_version": 1, "features": [...],
     "mean": [...], "scale": [...],
     "churn": {"coef": [...], "intercept": x, "at_risk_probability": p} | null,
     "offers": {"<product_id>": {"coef": [...], "intercept": x}, ...} | null,
     "training": {...}}

The churn probability is mapped onto the view's 0..1 score so that the artifact's
``at_risk_probability`` (chosen at training) lands on the rules' AT_RISK line (0.5): monotone,
so rankings and AUC are the probability's, and the lifecycle stage keeps one threshold.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

    def probability(self, x: Sequence[float]) -> float:
        logit = self.b + sum(map(operator.mul, self.w, x))
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))


def _groups(codes: Mapping[str, str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(reason code, the indexes of its features), codes in name order."""
    by_code: dict[str, list[int]] = {}
    for i, name in enumerate(features.NAMES):
        if name in codes:
            by_code.setdefault(codes[name], []).append(i)
    return tuple((code, tuple(idx)) for code, idx in sorted(by_code.items()))


_CHURN_GROUPS, _OFFER_GROUPS = _groups(features.CHURN_REASON), _groups(features.OFFER_REASON)


def _reasons(
    m: Logistic, x: Sequence[float], groups: tuple[tuple[str, tuple[int, ...]], ...], limit: int
) -> tuple[str, ...]:
    """Codes of the feature groups that push the score up most (ties: the code's name)."""
    w, shift = m.w, m.shift
    ranked = []
    for code, idx in groups:
        v = sum([w[i] * x[i] - shift[i] for i in idx])
        if v >= MIN_REASON_LOGIT:
            ranked.append((-v, code))
    ranked.sort()
    return tuple(code for _, code in ranked[:limit])


@dataclass(frozen=True)
class ScoreModel:
    """A loaded artifact (implements :class:`services.data_hub.domain.ScoreModel`)."""

    version: str
    churn_model: Logistic | None
    at_risk_probability: float
    offer_models: Mapping[str, Logistic]

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

        def logistic(d: Mapping[str, Any], where: str) -> Logistic:
            coef = tuple(float(x) for x in d["coef"])
            if len(coef) != n:
                raise ArtifactError(f"{where}.coef: {len(coef)} values for {n} features")
            return Logistic.of(coef, float(d["intercept"]), mean, scale)

        churn = data.get("churn")
        return cls(
            version=str(data["version"]),
            churn_model=logistic(churn, "churn") if churn else None,
            at_risk_probability=float(churn["at_risk_probability"]) if churn else 0.5,
            offer_models={pid: logistic(m, f"offers.{pid}") for pid, m in (data.get("offers") or {}).items()},
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
        offers_on = bool(self.offer_models) and bool(candidates)
        if not churn_on and not offers_on:
            return None, None
        x = features.vector(facts, rules)
        churn = None
        if self.churn_model is not None and churn_on:
            p = self.churn_model.probability(x)
            reasons = _reasons(self.churn_model, x, _CHURN_GROUPS, MAX_REASONS)
            churn = Churn(self.view_score(p), reasons, self.version)
        return churn, (self.rank(x, candidates, rules) if offers_on else None)

    def offer_probability(self, product_id: str, x: Sequence[float]) -> float:
        """0 for a product the artifact has no model for (it ranks last)."""
        m = self.offer_models.get(product_id)
        return m.probability(x) if m is not None else 0.0

    def rank(self, x: Sequence[float], candidates: Sequence[Product], rules: Rules) -> tuple[Offer, ...]:
        """Eligible candidates by the probability of opening them; reasons for the ones shown."""
        ranked = sorted((-round(self.offer_probability(p.product_id, x), 4), p.product_id, p) for p in candidates)
        out = []
        for neg, _, p in ranked[: rules.max_offers]:
            m = self.offer_models.get(p.product_id)
            reasons: tuple[str, ...] = (domain.NOT_HELD,)
            if m is not None:
                reasons += _reasons(m, x, _OFFER_GROUPS, 2)
            out.append(Offer(p.product_id, -neg, reasons, p.type, p.display_name, self.version))
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
