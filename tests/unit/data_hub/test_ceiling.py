"""The churn ceiling's hidden state at T and its AUCs, on tiny hand-made populations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from devtools.models import ceiling
from devtools.models import dataset as dsm
from devtools.population import Params, _Latent
from services.data_hub import features
from services.data_hub.domain import DAY_US, MICROS

T = datetime(2025, 1, 1, tzinfo=UTC)
T_US = int(T.timestamp()) * MICROS


def _latent(leave_at: datetime | None, *, abrupt: bool = False, fade_days: int = 0) -> _Latent:
    return _Latent(
        stage="family",
        salary=1_000_000,
        savings=0.2,
        appetite=0.5,
        engagement=8.0,
        season=(0.0, 1),
        satisfaction=0.0,
        leave_at=leave_at,
        abrupt=abrupt,
        fade_days=fade_days,
    )


def test_the_hidden_state_at_t_sees_only_decisions_made_by_t() -> None:
    latents = {
        "fading": _latent(T - timedelta(days=40), fade_days=120),
        "later": _latent(T + timedelta(days=50), abrupt=True),
        "stays": _latent(None),
    }
    x = np.zeros((3, len(features.NAMES)))
    x[:, features.NAMES.index("tenure_years")] = [3.0, 0.5, 2.0]
    ds = dsm.Dataset(
        as_of=np.full(3, T_US, dtype=np.int64),
        customer=list(latents),
        x=x,
        rules_churn=np.zeros(3),
        held=[["dep-current"]] * 3,
        eligible=[[]] * 3,
        rules_offers=[[]] * 3,
        truth={cid: dsm.Truth() for cid in latents},
        end_us=T_US + 400 * DAY_US,
    )
    rows, kinds = ceiling.hidden_state(ds, np.arange(3), latents, Params())
    assert kinds == ["decided", "later", "never"]
    h = {name: rows[:, k] for k, name in enumerate(ceiling.HIDDEN + ceiling.FUTURE)}
    assert list(h["decided"]) == [1.0, 0.0, 0.0]
    assert h["days_since_decision"][0] == pytest.approx(40)
    assert h["days_to_exit"][0] == pytest.approx(80)  # 120-day fade, 40 days done
    # the decision after T is hidden at T (abrupt is not seen) and only in the hindsight columns
    assert h["abrupt"][1] == 0.0 and h["future_abrupt"][1] == 1.0
    assert h["days_to_decision"][1] == pytest.approx(50)
    # the first year's hazard is 1.8 x the base (satisfaction 0: exp(0) = 1)
    assert h["hazard"][1] == pytest.approx(Params().leave_hazard * Params().new_customer_hazard_x)
    assert h["hazard"][2] == pytest.approx(Params().leave_hazard)


def test_a_label_that_is_the_decision_made_by_t_is_ranked_perfectly_by_every_oracle() -> None:
    rng = np.random.default_rng(0)
    n = 400
    decided = rng.random(n) < 0.3
    hidden = np.zeros((n, len(ceiling.HIDDEN) + len(ceiling.FUTURE)))
    hidden[:, ceiling.HIDDEN.index("decided")] = decided
    hidden[:, ceiling.HIDDEN.index("hazard")] = rng.random(n) * 0.01
    kind = np.where(decided, "decided", "never")
    rows = ceiling.Rows(rng.random((n, len(features.NAMES))), hidden, decided, kind)
    (result,) = ceiling.measure([rows], [(7, rows)], None)
    assert result.positives == {"decided": int(decided.sum()), "later": 0, "never": 0}
    assert set(result.auc) == {"analytic", "simulator", "seen", "hindsight"}
    assert all(v == 1.0 for v in result.auc.values())
    assert result.line().startswith("ceiling: analytic_auc=1.000 simulator_auc=1.000")
