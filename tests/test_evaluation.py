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


# ----------------------------------------------------------------------------------------------- the field's metrics
# Small hand-computed fixtures: every expected figure is derived in the comments from the metric's definition
# (README "Metrics"; evaluation/metrics.py docstrings), not read back from the implementation.


def _pool():
    """4 queries, tasks t1 t1 t2 t2; LLM a costs $0.001/query, b $0.002, c $0.004, d $0.003 and is never observed.

    quality   a    b    c    d
    q0 (t1)   1    1    0    –
    q1 (t1)   0    1    1    –
    q2 (t2)   1    –    1    –      (b's cell missing)
    q3 (t2)   0    0    1    –
    """
    from radialrouter.data import RoutingDataset

    nan = np.nan
    quality = np.array([[1, 1, 0, nan], [0, 1, 1, nan], [1, nan, 1, nan], [0, 0, 1, nan]])
    cost = np.tile([0.001, 0.002, 0.004, 0.003], (4, 1))
    return RoutingDataset.from_arrays([f"q{i}" for i in range(4)], quality, ["a", "b", "c", "d"], cost=cost,
                                      tasks=["t1", "t1", "t2", "t2"])


def test_a_single_llm_is_scored_on_the_queries_where_it_is_observed():
    """Always calling one LLM: macro Perf/Cost over its observed queries (USD per 1,000 queries), Score = Perf − λ·Cost;
    an LLM observed nowhere is an error naming it; the most expensive LLM is the one with the highest mean cost."""
    from radialrouter.evaluation.metrics import most_expensive_llm, single_llm_summary

    data = _pool()
    # b on q0, q1 (t1: 1, 1 → 1.0) and q3 (t2: 0 → 0.0): macro perf (1 + 0) / 2 = 0.5; cost $0.002 → 2.0 per 1,000
    b = single_llm_summary(data, 1, lam=0.1)
    assert b["macro"].perf == pytest.approx(0.5) and b["macro"].cost == pytest.approx(2.0)
    assert b["macro"].score == pytest.approx(0.5 - 0.1 * 2.0)
    assert b["micro"].perf == pytest.approx(2 / 3)  # 2 correct of its 3 observed queries
    assert set(b["per_task"]) == {"t1", "t2"} and b["per_task"]["t2"].perf == 0.0
    # c: t1 (0 + 1) / 2 = 0.5, t2 (1 + 1) / 2 = 1.0 → macro 0.75; λ defaults to 0 (Score = Perf)
    c = single_llm_summary(data, 2)
    assert c["macro"].perf == pytest.approx(0.75) and c["macro"].score == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"'d' has no observed quality on these 4 queries"):
        single_llm_summary(data, 3)
    assert most_expensive_llm(data) == 2  # c, $0.004 per query


def test_the_qnc_reference_is_the_best_single_llm_ties_to_the_cheaper():
    """QNC's bar is the best single LLM by macro quality over its observed queries; of equally good LLMs the
    cheaper one; an LLM observed nowhere is left out (it cannot be the reference)."""
    from radialrouter.data import RoutingDataset
    from radialrouter.evaluation.metrics import best_single_reference

    data = _pool()
    # macro perf: a = (0.5 + 0.5) / 2 = 0.5, b = 0.5 (above), c = 0.75 → c, at $4 per 1,000 queries
    assert best_single_reference(data) == {"llm": "c", "perf": pytest.approx(0.75), "cost": pytest.approx(4.0)}
    # without c, a and b tie at 0.5: a is cheaper ($1 against $2 per 1,000)
    ab = RoutingDataset.from_arrays(data.prompts, data.quality[:, :2], ["a", "b"], cost=data.cost[:, :2],
                                    tasks=data.tasks)
    assert best_single_reference(ab) == {"llm": "a", "perf": pytest.approx(0.5), "cost": pytest.approx(1.0)}
    # d is never observed: it is skipped wherever it stands in the pool (d's NaN quality never wins)
    da = RoutingDataset.from_arrays(data.prompts, data.quality[:, [3, 0, 2]], ["d", "a", "c"],
                                    cost=data.cost[:, [3, 0, 2]], tasks=data.tasks)
    assert best_single_reference(da)["llm"] == "c"
    assert best_single_reference(da.subset(np.array([0, 2])))["llm"] == "a"  # q0, q2: a right on both, c on one


def test_curve_metrics_summarise_a_lambda_sweep():
    """From one router's λ-sweep rows: AIQ over the given cost range, QNC against the best single LLM (c: perf
    0.75 at $4 per 1,000 queries), the peak quality, and the Pareto front as (λ, cost, perf) by increasing cost."""
    from radialrouter.evaluation.metrics import curve_metrics

    rows = [{"lam": 0.0, "cost": 3.0, "perf": 0.8}, {"lam": 0.02, "cost": 2.0, "perf": 0.75},
            {"lam": 0.05, "cost": 2.5, "perf": 0.7}, {"lam": 0.1, "cost": 1.0, "perf": 0.5}]
    out = curve_metrics(rows, _pool(), cost_range=(1.0, 3.0))
    # hull (1, 0.5) → (2, 0.75) → (3, 0.8) (2.5, 0.7 lies below); area 0.625 + 0.775 = 1.4 over a range of 2
    assert out["aiq"] == pytest.approx(0.7)
    # the cheapest point reaching 0.75 costs 2.0: QNC = 2.0 / 4.0
    assert out["qnc"] == pytest.approx(0.5)
    assert out["peak_perf"] == pytest.approx(0.8) and out["reference_llm"] == "c"
    assert out["front"] == [{"lam": 0.1, "cost": 1.0, "perf": 0.5}, {"lam": 0.02, "cost": 2.0, "perf": 0.75},
                            {"lam": 0.0, "cost": 3.0, "perf": 0.8}]
    # without a range, the points' own min–max cost: the same [1, 3] here
    assert curve_metrics(rows, _pool())["aiq"] == pytest.approx(0.7)
    # a shared range wider than this router's points: left of its cheapest point it counts at that point's quality,
    # area 0.5 · 0.5 + 1.4 = 1.65 over [0.5, 3]
    assert curve_metrics(rows, _pool(), cost_range=(0.5, 3.0))["aiq"] == pytest.approx(1.65 / 2.5)
    # a sweep that never reaches c's quality has no QNC
    assert curve_metrics(rows[1:2] + rows[3:], _pool())["qnc"] == pytest.approx(0.5)
    assert curve_metrics(rows[3:], _pool())["qnc"] is None


def test_aiq_over_a_shared_range_counts_only_the_curve_inside_it():
    """AIQ over a shared cost range integrates the hull inside that range only, even when several hull vertices
    lie to its left."""
    # hull (0, 0) → (1, 0.6) → (2, 0.8) → (3, 0.9) (slopes 0.6, 0.2, 0.1: concave); over [1.5, 3]: height 0.7 at 1.5,
    # area (0.7 + 0.8) / 2 · 0.5 + (0.8 + 0.9) / 2 · 1 = 0.375 + 0.85 = 1.225, over a width of 1.5
    assert aiq([0, 1, 2, 3], [0, 0.6, 0.8, 0.9], cost_range=(1.5, 3.0)) == pytest.approx(1.225 / 1.5)
    # and symmetrically on the right: over [0, 1.5], area 0.3 + (0.6 + 0.7) / 2 · 0.5 = 0.625, width 1.5
    assert aiq([0, 1, 2, 3], [0, 0.6, 0.8, 0.9], cost_range=(0.0, 1.5)) == pytest.approx(0.625 / 1.5)


def test_the_hull_keeps_one_vertex_per_cost_and_no_collinear_middle_points():
    """The hull's vertices: at one cost only the best quality, a point on a straight segment between two others is
    not a vertex (the chain is strictly concave), and there is no hull of nothing."""
    xs, ys = nondecreasing_hull([1.0, 1.0, 2.0], [0.4, 0.7, 0.5])  # (1, 0.7) dominates both others
    assert xs.tolist() == [1.0] and ys.tolist() == [0.7]
    xs, ys = nondecreasing_hull([0, 1, 2], [0.0, 0.5, 1.0])  # (1, 0.5) lies on the segment
    assert xs.tolist() == [0.0, 2.0] and ys.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="^no points$"):
        nondecreasing_hull([], [])


def test_collapse_in_dollars_per_query():
    """Collapse diagnostics on real per-query prices (fractions of a cent) and fractional decisions.

    overspend: the decision's expected quality and cost against each LLM; RCI: the share of queries sent to the
    most expensive LLM although a strictly cheaper one was as good (a missing cell is never that cheaper LLM)."""
    from radialrouter.evaluation.metrics import collapse_index

    quality = np.array([[0.6, 0.8], [0.9, 0.7]])
    cost = np.tile([0.001, 0.004], (2, 1))
    weights = np.array([[0.5, 0.5], [0.0, 1.0]])
    stats = collapse_stats(weights, quality, cost)
    # q0 obtains 0.7 at $0.0025: a (0.6) is not as good, b ($0.004) is not cheaper → not overspent;
    # q1 obtains 0.7 at $0.004: a has 0.9 at $0.001 → overspent. Share 1/2; b gets 0.75 of the calls.
    assert stats["overspend_share"] == pytest.approx(0.5)
    assert stats["most_expensive_share"] == pytest.approx(0.75)

    quality = np.array([[1, 1.0], [0, 1], [1, 1], [np.nan, 1]])
    cost = np.tile([0.001, 0.005], (4, 1))
    # q0: all on b, a as good and cheaper → 1; q1: a worse → 0; q2: on a → 0; q3: a missing → 0
    assert collapse_index(np.array([[0, 1.0], [0, 1], [1, 0], [0, 1]]), quality, cost) == pytest.approx(1 / 4)
    # half of q0 on b counts half
    assert collapse_index(np.array([[0.5, 0.5], [0, 1], [1, 0], [0, 1]]), quality, cost) == pytest.approx(0.5 / 4)


def test_evaluate_router_rows():
    """``evaluate_router``: one row per λ (default: the router's own named trade-offs, named in ``scenario``), macro
    Perf/Cost/Score at top level with micro and per-task figures, the share of calls per LLM and the collapse
    diagnostics; labelled with the router's display name when it has one."""
    from radialrouter.core.objective import SCENARIOS
    from radialrouter.data import RoutingDataset
    from radialrouter.evaluation import evaluate_router
    from radialrouter.routers import make_router

    # a right on q0, q2 ($0.001); b right everywhere ($0.004); tasks t1 = q0, q1 and t2 = q2, q3
    quality = np.array([[1, 1], [0, 1], [1, 1], [0, 1.0]])
    data = RoutingDataset.from_arrays([f"q{i}" for i in range(4)], quality, ["a", "b"],
                                      cost=np.tile([0.001, 0.004], (4, 1)), tasks=["t1", "t1", "t2", "t2"])
    router = make_router("best-single").fit(data)
    rows = evaluate_router(router, data, lams=[0.0, 1.0])
    assert [r["router"] for r in rows] == ["best-single", "best-single"] and [r["lam"] for r in rows] == [0.0, 1.0]
    # λ = 0: always b (perf 1.0 vs 0.5), cost $4 per 1,000; λ = 1: a scores 0.5 − 1 = −0.5 > b's 1 − 4 = −3
    top, low = rows
    assert (top["perf"], top["cost"], top["score"]) == pytest.approx((1.0, 4.0, 1.0))
    assert (low["perf"], low["cost"], low["score"]) == pytest.approx((0.5, 1.0, -0.5))
    assert top["call_share"] == {"a": 0.0, "b": 1.0} and low["call_share"] == {"a": 1.0, "b": 0.0}
    assert low["micro"] == {"perf": 0.5, "cost": pytest.approx(1.0), "score": pytest.approx(-0.5)}
    assert low["per_task"]["t1"]["perf"] == 0.5 and set(low["per_task"]) == {"t1", "t2"}
    # always b: a was as good and cheaper on q0 and q2 → overspend 1/2, all calls to the most expensive LLM
    assert top["overspend_share"] == pytest.approx(0.5) and top["most_expensive_share"] == 1.0
    assert low["overspend_share"] == 0.0 and low["most_expensive_share"] == 0.0
    assert [r["scenario"] for r in rows] == ["performance-first", None]  # λ = 1 is none of the router's presets

    # no λ: the router's named trade-offs, in order, each row naming its scenario. Its price of quality: b buys 0.5
    # more quality for $3 more per 1,000 queries → 1/6; balance = 1/3 of it ≈ 0.0556, cost-first = 5/3 of it ≈ 0.278
    rows = evaluate_router(router, data)
    assert [r["lam"] for r in rows] == pytest.approx([0.0, 0.0556, 0.278], abs=1e-4)
    assert [r["cost"] for r in rows] == pytest.approx([4.0, 4.0, 1.0])  # only cost-first's λ makes a worth it
    assert [r["scenario"] for r in rows] == list(router.presets_)
    assert [r["lam"] for r in rows] == pytest.approx(list(router.presets_.values()))
    # presets passed explicitly win over the router's; a router without presets falls back to the paper's
    mine = {"cheap": 1.0, "best": 0.0}
    assert [(r["scenario"], r["lam"]) for r in evaluate_router(router, data, presets=mine)] == [("cheap", 1.0),
                                                                                               ("best", 0.0)]
    router.presets_ = None
    assert [r["scenario"] for r in evaluate_router(router, data)] == list(SCENARIOS)
    del router.presets_  # a router object with no presets at all (older or hand-made)
    assert [r["lam"] for r in evaluate_router(router, data)] == list(SCENARIOS.values())
    router.display_name = "best-single (mine)"
    assert {r["router"] for r in evaluate_router(router, data, lams=[0.0])} == {"best-single (mine)"}
