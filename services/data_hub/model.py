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
    coef: tuple[float, ...]
    intercept: float

    def contributions(self, z: Sequence[float]) -> list[float]:
        return [c * v for c, v in zip(self.coef, z, strict=True)]

    @staticmethod
    def probability(logit: float) -> float:
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))


def _reasons(contrib: Sequence[float], names: Sequence[str], codes: Mapping[str, str], limit: int) -> tuple[str, ...]:
    """Codes of the feature groups that push the score up most (ties: the code's name)."""
    by_code: dict[str, float] = {}
    for name, value in zip(names, contrib, strict=True):
        code = codes.get(name)
        if code is not None:
            by_code[code] = by_code.get(code, 0.0) + value
    ranked = sorted((-v, code) for code, v in by_code.items() if v >= MIN_REASON_LOGIT)
    return tuple(code for _, code in ranked[:limit])


@dataclass(frozen=True)
class ScoreModel:
    """A loaded artifact (implements :class:`services.data_hub.domain.ScoreModel`)."""

    version: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
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

        def logistic(d: Mapping[str, Any], where: str) -> Logistic:
            coef = tuple(float(x) for x in d["coef"])
            if len(coef) != n:
                raise ArtifactError(f"{where}.coef: {len(coef)} values for {n} features")
            return Logistic(coef, float(d["intercept"]))

        churn = data.get("churn")
        mean, scale = tuple(float(x) for x in data["mean"]), tuple(float(x) or 1.0 for x in data["scale"])
        if len(mean) != n or len(scale) != n:
            raise ArtifactError(f"mean/scale: expected {n} values each")
        return cls(
            version=str(data["version"]),
            mean=mean,
            scale=scale,
            churn_model=logistic(churn, "churn") if churn else None,
            at_risk_probability=float(churn["at_risk_probability"]) if churn else 0.5,
            offer_models={pid: logistic(m, f"offers.{pid}") for pid, m in (data.get("offers") or {}).items()},
        )

    def standardized(self, facts: CustomerFacts, rules: Rules) -> list[float]:
        x = features.vector(facts, rules)
        return [(v - m) / s for v, m, s in zip(x, self.mean, self.scale, strict=True)]

    def churn_probability(self, z: Sequence[float]) -> float:
        assert self.churn_model is not None
        return Logistic.probability(self.churn_model.intercept + sum(self.churn_model.contributions(z)))

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
        z = self.standardized(facts, rules)
        churn = None
        if churn_on:
            assert self.churn_model is not None
            contrib = self.churn_model.contributions(z)
            p = Logistic.probability(self.churn_model.intercept + sum(contrib))
            reasons = _reasons(contrib, features.NAMES, features.CHURN_REASON, MAX_REASONS)
            churn = Churn(self.view_score(p), reasons, self.version)
        return churn, (self.rank(z, candidates, rules) if offers_on else None)

    def rank(self, z: Sequence[float], candidates: Sequence[Product], rules: Rules) -> tuple[Offer, ...]:
        """Eligible candidates by the probability of opening them (unknown products last)."""
        ranked: list[tuple[float, str, Offer]] = []
        for p in candidates:
            m = self.offer_models.get(p.product_id)
            reasons: tuple[str, ...]
            if m is None:
                prob, reasons = 0.0, (domain.NOT_HELD,)
            else:
                contrib = m.contributions(z)
                prob = Logistic.probability(m.intercept + sum(contrib))
                reasons = (domain.NOT_HELD, *_reasons(contrib, features.NAMES, features.OFFER_REASON, 2))
            offer = Offer(p.product_id, round(prob, 4), reasons, p.type, p.display_name, self.version)
            ranked.append((-offer.score, p.product_id, offer))
        ranked.sort(key=lambda r: (r[0], r[1]))
        return tuple(o for _, _, o in ranked[: rules.max_offers])


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
