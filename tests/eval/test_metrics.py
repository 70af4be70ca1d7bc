"""Routing metrics on small hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.routing import metrics


def test_pareto_frontier_keeps_non_dominated_points_in_cost_order():
    pts = [[1.0, 0.5], [2.0, 0.4], [3.0, 0.9], [0.5, 0.2], [3.0, 0.8], [4.0, 0.9]]
    idx = metrics.pareto_frontier(pts)
    assert idx.tolist() == [3, 0, 2]


def test_hull_is_non_decreasing_and_concave():
    pts = [[0.0, 0.0], [1.0, 0.2], [2.0, 0.9], [3.0, 0.95], [4.0, 0.5]]
    hull = metrics.hull_curve(pts)
    # (1, 0.2) lies under the chord from (0, 0) to (2, 0.9); (4, 0.5) is dominated
    assert hull.tolist() == [[0.0, 0.0], [2.0, 0.9], [3.0, 0.95]]


def test_aiq_of_a_known_curve():
    # hull (0,0) → (1,1) then flat: mean over [0, 2] = (0.5 + 1) / 2
    assert metrics.aiq([[0, 0], [1, 1]], 0.0, 2.0) == pytest.approx(0.75)
    # a straight line from (0, 0.2) to (4, 0.6): mean 0.4
    assert metrics.aiq([[0, 0.2], [4, 0.6]], 0.0, 4.0) == pytest.approx(0.4)
    # a single point left of the range is flat across it
    assert metrics.aiq([[0.0, 0.7]], 1.0, 3.0) == pytest.approx(0.7)


def _matrix():
    """3 queries; W cheapest and weakest, S strongest and dearest, O right where W is wrong (cheaply)."""
    quality = np.array([[1, 1, 0], [0, 1, 1], [0, 1, 1]], dtype=float)  # columns W, S, O
    cost = np.array([[1, 10, 20], [1, 10, 0.5], [1, 10, 0.5]], dtype=float)
    return quality, cost


def _oracle(quality, cost):
    qmax = quality.max(axis=1, keepdims=True)
    pick = np.where(quality >= qmax, cost, np.inf).argmin(axis=1)
    rows = np.arange(len(quality))
    return cost[rows, pick].mean(), quality[rows, pick].mean()


def test_apgr_oracle_is_one_and_weakest_is_zero():
    quality, cost = _matrix()
    q, c = quality.mean(axis=0), cost.mean(axis=0)
    weak, strong = (c[0], q[0]), (c[1], q[1])
    oc, oq = _oracle(quality, cost)
    assert (oc, oq) == pytest.approx((2 / 3, 1.0))
    assert metrics.apgr([[oc, oq]], weak=weak, strong=strong) == pytest.approx(1.0)
    assert metrics.apgr([list(weak)], weak=weak, strong=strong) == pytest.approx(0.0)
    # random mixing of W and S, and always-S, recover half the gap on average
    assert metrics.apgr(metrics.random_mix(weak, strong), weak=weak, strong=strong) == pytest.approx(0.5)
    assert metrics.apgr([list(strong)], weak=weak, strong=strong) == pytest.approx(0.5)


def test_apgr_integrates_clipped_gap():
    weak, strong = (0.0, 0.5), (1.0, 1.0)
    # reaches the strong quality at half the cost: PGR rises 0→1 over [0, .5], then 1 → 0.25 + 0.5
    assert metrics.apgr([[0.5, 1.0]], weak=weak, strong=strong) == pytest.approx(0.75)
    # overshooting the strong model is clipped at 1
    assert metrics.apgr([[0.5, 1.5]], weak=weak, strong=strong) == pytest.approx(
        0.875
    )  # 1 - x*t/2, x = t = 0.5
    assert math.isnan(metrics.apgr([[0.5, 1.0]], weak=(0, 1.0), strong=(1, 1.0)))


def test_share_to_reach():
    assert metrics.share_to_reach([0.5, 0.9, 0.95, 1.0], [0.0, 0.3, 0.6, 1.0], 0.9) == 0.3
    assert metrics.share_to_reach([0.5], [0.0], 0.9) is None


def test_cpt_on_a_hand_computed_curve():
    from eval.routing.metrics import cost_to_pgr, cpt, quality_at_cost

    # weak 0.5, strong 1.0; points (share 0.2, q 0.6) and (0.5, 0.9): the hull from (0, 0.5) skips
    # (0.2, 0.6) (below the chord) and rises with slope 0.8 to (0.5, 0.9), then stays flat
    shares, quals = [0.2, 0.5], [0.6, 0.9]
    assert cpt(shares, quals, 0.5, 1.0, 0.5) == pytest.approx(0.25 / 0.8)  # q = 0.75
    assert cpt(shares, quals, 0.5, 1.0, 0.8) == pytest.approx(0.5)  # q = 0.9: the point itself
    assert cpt(shares, quals, 0.5, 1.0, 0.9) is None  # q = 0.95 is never reached
    assert cpt(shares, quals, 0.5, 0.5, 0.5) is None  # no gap
    pts = [[0.2, 0.6], [0.5, 0.9]]
    assert cost_to_pgr(pts, weak=(0.0, 0.5), strong=(1.0, 1.0), x=0.5) == pytest.approx(0.3125)
    assert quality_at_cost(pts, 0.25, anchor=(0.0, 0.5)) == pytest.approx(0.7)
