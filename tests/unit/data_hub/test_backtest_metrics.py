"""Back-test metrics and truth on tiny hand-made populations with known answers (no fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

from devtools.models import dataset as dsm
from devtools.models import metrics
from services.data_hub.domain import DAY_US


def test_auc_of_a_perfect_a_reversed_and_a_tied_ranking() -> None:
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert metrics.roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    # one positive below one negative: 3 of 4 pairs right
    assert metrics.roc_auc(y, np.array([0.1, 0.6, 0.5, 0.9])) == 0.75


def test_top_decile_precision_and_lift() -> None:
    # 20 customers, 2 leavers (base rate 0.1), both in the top 2 (the top decile): precision 1, lift 10
    y = np.zeros(20, dtype=bool)
    y[[3, 7]] = True
    score = np.linspace(0, 0.5, 20)
    score[[3, 7]] = [0.9, 0.8]
    assert metrics.top_share(y, score) == (1.0, pytest.approx(10.0))
    assert metrics.recall_at(y, score, 0.85) == 0.5


def test_lead_time_counts_from_the_first_flag_of_the_run_that_reaches_the_leaving() -> None:
    left = 200 * DAY_US
    flags = [(10 * DAY_US, True), (40 * DAY_US, False), (70 * DAY_US, True), (100 * DAY_US, True), (130 * DAY_US, True)]
    assert metrics.lead_days(flags, left, DAY_US) == 130
    # not flagged at the last look before leaving: missed
    assert metrics.lead_days([*flags, (160 * DAY_US, False)], left, DAY_US) is None
    # snapshots after the leaving do not count
    assert metrics.lead_days([*flags, (260 * DAY_US, False)], left, DAY_US) == 130


def test_hit_rate_against_what_was_opened() -> None:
    offered = [["a", "b", "c"], ["a", "b", "c"], ["d"]]
    opened = [{"c"}, set(), {"a"}]
    assert metrics.hit_rate(offered, opened) == pytest.approx(1 / 3)


def test_leaving_is_the_last_holding_closed_or_the_start_of_a_long_silence() -> None:
    d = DAY_US
    # every holding closed on day 50 (transactions stop then too)
    assert dsm.left_at([10 * d, 20 * d, 40 * d], [30 * d, 50 * d], 0, 400 * d) == 40 * d
    # one holding still open, transactions stop on day 40: dormant from day 40 (90 days of silence seen)
    assert dsm.left_at([10 * d, 20 * d, 40 * d], [None], 0, 400 * d) == 40 * d
    # a 60-day holiday is not leaving
    assert dsm.left_at([10 * d, 70 * d, 90 * d, 120 * d], [None], 0, 150 * d) is None
    # silence not yet long enough at the end of the data: unknown, not left
    assert dsm.left_at([10 * d, 300 * d], [None], 0, 350 * d) == 10 * d
    assert dsm.left_at([10 * d, 80 * d], [None], 0, 150 * d) is None
