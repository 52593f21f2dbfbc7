"""Metrics: averaging, the Score identity, AIQ's hull against a brute-force version, Pareto, QNC, collapse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from radialrouter.evaluation import aiq, collapse_stats, nondecreasing_hull, pareto_front, qnc, summarize
from radialrouter.objective import argmax_cheapest, rank_cheapest_first, resolve_lam, target_distribution, utility


def test_summarize_macro_micro_and_score():
    perf = np.array([1, 0, 1, 1, 1, 1.0])
    cost = np.array([1, 1, 1, 3, 3, 3]) * 1e-3  # USD per query → 1 and 3 USD per 1,000 queries
    tasks = np.array(["a", "a", "b", "b", "b", "b"])
    s = summarize(perf, cost, tasks, lam=0.1)
    assert s["per_task"]["a"].perf == 0.5 and s["per_task"]["a"].cost == pytest.approx(1.0)
    assert s["macro"].perf == pytest.approx(0.75)
    assert s["macro"].cost == pytest.approx((1.0 + 2.5) / 2)  # mean of per-task means
    assert s["micro"].perf == pytest.approx(5 / 6)
    assert s["micro"].cost == pytest.approx(2.0)
    assert s["macro"].score == pytest.approx(0.75 - 0.1 * 1.75)


def test_utility_units_and_target():
    assert utility(np.array([0.8]), np.array([0.005]), 0.02)[0] == pytest.approx(0.8 - 0.02 * 5)
    p = target_distribution(np.array([[1.0, 1.0]]), np.array([[0.001, 0.002]]), 0.1, 0.05)
    assert p.sum() == pytest.approx(1) and p[0, 0] > p[0, 1]
    assert resolve_lam("balance") == 0.02 and resolve_lam("CF") == 0.1 and resolve_lam("0.05") == 0.05
    with pytest.raises(ValueError, match="λ"):
        resolve_lam(-1)


def test_ties_go_to_the_cheaper_llm():
    scores = np.array([[1.0, 1.0, 0.5], [0.2, 0.9, 0.9]])
    cost = np.array([2.0, 1.0, 0.5])
    assert argmax_cheapest(scores, cost).tolist() == [1, 2]
    assert rank_cheapest_first(scores, cost).tolist() == [[1, 0, 2], [2, 1, 0]]


def _bruteforce_aiq(costs, perfs):
    """O(n³) reference: hull vertices are points not strictly below any chord between two points (or below a
    cheaper point, for the non-decreasing part); integrate the piecewise-linear curve through them."""
    pts = sorted(set(zip(costs, perfs)))
    best_left = -np.inf
    verts = []
    for p in pts:
        under_chord = any(
            a[0] <= p[0] <= b[0] and a[0] < b[0] and a[1] + (b[1] - a[1]) * (p[0] - a[0]) / (b[0] - a[0]) > p[1] + 1e-12
            for a, b in itertools.combinations(pts, 2)
        )
        dominated = any(q[0] <= p[0] and q[1] > p[1] + 1e-12 for q in pts if q != p)
        if not under_chord and not dominated:
            verts.append(p)
        best_left = max(best_left, p[1])
    xs, ys = zip(*verts)
    lo, hi = min(costs), max(costs)
    grid = np.linspace(lo, hi, 200001)
    curve = np.interp(grid, xs, ys, left=ys[0], right=ys[-1])
    return np.trapezoid(curve, grid) / (hi - lo)


@pytest.mark.parametrize("seed", range(8))
def test_aiq_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 25))
    costs = np.round(rng.uniform(0, 10, n), 2).tolist()
    perfs = np.round(rng.uniform(0, 1, n), 2).tolist()
    assert aiq(costs, perfs) == pytest.approx(_bruteforce_aiq(costs, perfs), abs=1e-4)


def test_hull_is_nondecreasing_and_flat_after_peak():
    xs, ys = nondecreasing_hull([0, 1, 2, 3, 4], [0.2, 0.6, 0.7, 0.9, 0.5])
    assert xs.tolist() == [0, 1, 3] and ys.tolist() == [0.2, 0.6, 0.9]
    assert aiq([0, 4], [0.5, 0.5]) == pytest.approx(0.5)


def test_pareto_front_and_qnc():
    costs, perfs = [1, 2, 3, 4, 0.5], [0.5, 0.7, 0.6, 0.9, 0.5]
    assert pareto_front(costs, perfs).tolist() == [4, 1, 3]
    assert qnc(costs, perfs, ref_perf=0.7, ref_cost=4) == pytest.approx(0.5)
    assert qnc(costs, perfs, ref_perf=0.95, ref_cost=4) is None


def test_collapse_stats():
    quality = np.array([[1, 1.0], [0, 1], [1, 1]])
    cost = np.array([[1, 5.0], [1, 5], [1, 5]])
    weights = np.array([[0, 1.0], [0, 1], [1, 0]])
    stats = collapse_stats(weights, quality, cost)
    assert stats["most_expensive_share"] == pytest.approx(2 / 3)
    assert stats["overspend_share"] == pytest.approx(1 / 3)  # only the first query had a cheaper equal LLM
