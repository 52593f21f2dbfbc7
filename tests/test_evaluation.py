"""Metrics: averaging, the Score identity, AIQ's hull against a brute-force version, Pareto, QNC, collapse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from radialrouter.core.objective import argmax_cheapest, rank_cheapest_first, resolve_lam, target_distribution, utility
from radialrouter.evaluation import aiq, collapse_stats, nondecreasing_hull, pareto_front, qnc, summarize


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


def test_named_tradeoffs_are_scale_free():
    """The presets are multiples of the pool's price of quality: rescaling every price rescales λ by the inverse,
    so the same queries go to the same LLMs at ``balance`` whatever the currency or price level."""
    from radialrouter.core.objective import PRESET_FRACTIONS, price_of_quality, tradeoff_presets

    rng = np.random.default_rng(0)
    quality = rng.uniform(0, 1, (200, 3)) + np.array([0.0, 0.1, 0.3])  # LLM 2 is the best on average …
    cost = np.tile(np.array([0.1, 0.5, 2.0]) * 1e-3, (200, 1))  # … and the priciest; LLM 0 the cheapest
    quality[0, 1] = np.nan  # a missing cell is ignored, not propagated
    scale = price_of_quality(quality, cost)
    assert scale == pytest.approx((np.nanmean(quality[:, 2]) - np.nanmean(quality[:, 0])) / 1.9)
    presets = tradeoff_presets(quality, cost)
    assert list(presets) == list(PRESET_FRACTIONS) and 0 == presets["performance-first"]
    assert presets["balance"] == pytest.approx(scale / 3, rel=1e-2) and presets["balance"] < presets["cost-first"]
    for factor in (1e-3, 7.0, 1e4):
        scaled = tradeoff_presets(quality, cost * factor)
        for name in presets:
            assert scaled[name] * factor == pytest.approx(presets[name], rel=1e-2)
            ok = ~np.isnan(quality).any(axis=1)
            a = argmax_cheapest(utility(quality[ok], cost[ok], presets[name]), cost[0])
            b = argmax_cheapest(utility(quality[ok], cost[ok] * factor, scaled[name]), cost[0] * factor)
            assert (a == b).mean() > 0.97  # identical up to the 3-digit rounding of λ
    # The best LLM is also the cheapest: nothing to trade, every preset is λ = 0.
    assert set(tradeoff_presets(quality[:, ::-1], cost).values()) == {0.0}
    # Names resolve with a router's presets; without them, the paper's values.
    assert resolve_lam("balance", presets=presets) == presets["balance"] and resolve_lam("BA") == 0.02


def test_named_tradeoffs_differ_on_every_shared_data_set():
    """On each shared data set with costs, the three presets give three distinct operating points for Task-best
    (with the paper's fixed λ, balance is performance-first on llmrouter9's cheap pool: the same LLMs, same cost)."""
    from conftest import SHARED_DATA as SHARED

    from radialrouter.core.objective import tradeoff_presets
    from radialrouter.data import load_splits
    from radialrouter.evaluation import evaluate_router
    from radialrouter.routers import make_router

    prices = SHARED / "prices.json"
    for name, with_prices in (("routerbench3", None), ("llmrouter9", prices), ("mmlupro29", prices)):
        path = SHARED / f"{name}.parquet"
        if not path.exists() or (with_prices is not None and not with_prices.exists()):
            pytest.skip(f"{path} or {prices} is absent (shared data sets live in ../shared/data)")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, train, _, test = load_splits(str(path), seed=0, prices=with_prices)
        presets = tradeoff_presets(train.quality, train.cost)
        rows = evaluate_router(make_router("task-best").fit(train), test, presets=presets)
        costs = [r["cost"] for r in rows]
        assert costs[0] > 1.15 * costs[1] > 1.15 * 1.15 * costs[2], (name, presets, costs)


def test_a_missing_outcome_never_becomes_a_reported_figure():
    """Metrics need every query's outcome: a NaN quality or cost is an error naming how many are missing."""
    from radialrouter.core.scoring import summarize

    tasks = np.array(["a", "a", "b"])
    with pytest.raises(ValueError, match=r"^1 per-query qualities and 0 costs are missing"):
        summarize(np.array([1.0, np.nan, 0.0]), np.full(3, 1e-3), tasks, 0.0)
    with pytest.raises(ValueError, match=r"^0 per-query qualities and 2 costs are missing"):
        summarize(np.ones(3), np.array([np.nan, 1e-3, np.nan]), tasks, 0.0)


def test_pareto_front_keeps_only_undominated_points():
    """Of two points at the same cost only the better one is on the front; equal quality at a higher cost is not."""
    from radialrouter.core.scoring import pareto_front

    assert pareto_front([1.0, 1.0, 2.0, 3.0, 3.0], [0.5, 0.7, 0.7, 0.9, 0.6]).tolist() == [1, 3]
    assert pareto_front([2, 1], [1, 0]).tolist() == [1, 0]  # integers too, by increasing cost


def test_choose_within_budget_respects_candidates():
    """Per query, the best LLM among its candidates whose cost fits the budget; none fits: its cheapest candidate.
    A non-candidate is never chosen, however good or cheap."""
    from radialrouter.core.scoring import choose_within_budget

    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.9, 0.5, 0.1]])
    costs = np.array([[1.0, 2.0, 0.5], [5.0, 4.0, 3.0], [1.0, 1.0, 1.0]])
    candidates = np.array([[False, True, True], [True, True, False], [False, False, True]])
    assert choose_within_budget(scores, costs, 2.0, candidates).tolist() == [1, 1, 2]
    assert choose_within_budget(scores, costs, 2.0).tolist() == [0, 2, 0]
    assert choose_within_budget(scores, costs, 2.0, [True, False, True]).tolist() == [0, 2, 0]  # broadcast


def test_aiq_and_qnc_at_their_edges():
    """AIQ over a cost range: one operating point (or a zero-width range) scores its quality; a range inside the
    points integrates the hull over that range only. QNC is the cheapest cost reaching the best single LLM's
    quality relative to its cost (any positive cost), None for a reference without a cost."""
    from radialrouter.evaluation.metrics import aiq, qnc

    assert aiq([2.0], [0.6]) == pytest.approx(0.6)
    assert aiq([1.0, 1.0], [0.4, 0.7]) == pytest.approx(0.7)
    # hull through (1, 0.5), (2, 0.7), (3, 0.9); over [1.5, 2.5] the mean height is 0.7 (a straight line)
    assert aiq([1.0, 2.0, 3.0], [0.5, 0.7, 0.9], cost_range=(1.5, 2.5)) == pytest.approx(0.7)
    assert aiq([1.0, 2.0, 3.0], [0.5, 0.7, 0.9], cost_range=(0.0, 4.0)) == pytest.approx(
        (1 * 0.5 + 0.6 + 0.8 + 1 * 0.9) / 4)  # left of the cheapest point at its quality, right at the last
    assert qnc([0.2, 0.3], [0.7, 0.8], ref_perf=0.8, ref_cost=0.5) == pytest.approx(0.6)
    assert qnc([0.2, 0.3], [0.7, 0.8], ref_perf=0.8, ref_cost=0.0) is None
    assert qnc([0.2, 0.3], [0.7, 0.8], ref_perf=0.9, ref_cost=0.5) is None
