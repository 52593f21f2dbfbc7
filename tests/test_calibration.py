"""Budget calibration (λ from a spending target) and budgeted batch routing, on synthetic data with known costs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import ROUTERBENCH3, needs_shared
from typer.testing import CliRunner

from radialrouter.core.objective import COST_SCALE, utility
from radialrouter.data import make_synthetic
from radialrouter.policy.calibration import (
    CalibrationError,
    calibrate_lam,
    read_queries,
    route_batch_budget,
    save_calibration,
)
from radialrouter.routers import Router, available_routers, from_pretrained, make_router, register


@register
class RidgeRouter(Router):
    """Per-LLM ridge regression of quality on the embedding; λ-free scores q̂ − λ·cost. Small and deterministic."""

    name = "test-ridge"

    def __init__(self, alpha: float = 1.0, encoder: Any = None) -> None:
        self.alpha = alpha
        self.encoder = encoder

    def _fit(self, train, val) -> None:
        x = np.c_[train.embeddings, np.ones(len(train))]
        self.w_ = np.linalg.solve(x.T @ x + self.alpha * np.eye(x.shape[1]), x.T @ train.quality)

    def predict_quality(self, x: np.ndarray) -> np.ndarray:
        return np.c_[x, np.ones(len(x))] @ self.w_

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        return utility(self.predict_quality(x), np.broadcast_to(self.mean_cost_, (len(x), len(self.llms_))), lam)

    def _state(self) -> dict[str, np.ndarray]:
        return {"w": self.w_}

    def _load_state(self, tensors, extra) -> None:
        self.w_ = tensors["w"]


class FixedLamRouter(RidgeRouter):
    """Trained for one λ and deaf to the λ asked at prediction, like the per-scenario routers."""

    lam_at_fit = True
    lam = 0.02

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        return super()._scores(x, self.lam)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_queries=1200, n_llms=5, seed=3)


@pytest.fixture(scope="module")
def router(data):
    return RidgeRouter().fit(data.select("train"))


def realised_cost(router, test, lam: float) -> float:
    """USD per 1,000 queries actually paid (true per-query costs of the chosen LLMs)."""
    choice = router.predict(test, lam)
    return float(test.cost[np.arange(len(test)), choice].mean() * COST_SCALE)


@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 3.0])
def test_calibrated_spend_is_within_target_and_interval(router, data, target):
    test = data.select("test")
    cal = calibrate_lam(router, test.embeddings, target_cost=target, n_boot=400)
    assert cal.expected_cost_per_1k_usd <= target + 1e-9
    assert cal.ci_low_per_1k_usd <= cal.expected_cost_per_1k_usd <= cal.ci_high_per_1k_usd
    assert cal.ci_low_per_1k_usd <= realised_cost(router, test, cal.lam) <= cal.ci_high_per_1k_usd
    assert cal.n_queries == len(test)
    assert abs(sum(cal.call_share.values()) - 1) < 1e-9


def test_calibration_is_the_largest_spend_under_the_target(router, data):
    x = data.select("test").embeddings
    cal = calibrate_lam(router, x, target_cost=1.5, n_boot=50)
    for lam in np.geomspace(1e-3, 10, 40):
        spend = float(router.predict_costs(x)[np.arange(len(x)), router.predict(x, lam)].mean() * COST_SCALE)
        assert spend <= cal.expected_cost_per_1k_usd + 1e-9 or spend > 1.5


def test_per_query_costs_override(router, data):
    test = data.select("test")
    cal = calibrate_lam(router, test.embeddings, target_cost=1.0, n_boot=50, costs=test.cost)
    assert cal.expected_cost_per_1k_usd == pytest.approx(realised_cost(router, test, cal.lam))
    with pytest.raises(CalibrationError, match="costs must have shape"):
        calibrate_lam(router, test.embeddings, target_cost=1.0, costs=test.cost[:10])


def test_target_share(router, data):
    x = data.select("test").embeddings
    top = router.llms_[-1]  # the most expensive LLM
    cal = calibrate_lam(router, x, target_share={top: 0.1}, n_boot=200)
    assert cal.share_llm == top
    assert abs(cal.share - 0.1) < 0.02
    assert cal.share_ci[0] <= cal.share <= cal.share_ci[1]
    assert abs((router.predict(x, cal.lam) == len(router.llms_) - 1).mean() - cal.share) < 1e-12


def test_unreachable_targets_raise_with_the_reachable_range(router, data):
    x = data.select("test").embeddings
    with pytest.raises(CalibrationError, match="cheapest routing found"):
        calibrate_lam(router, x, target_cost=0.01)
    with pytest.raises(CalibrationError, match="ranges from"):
        calibrate_lam(router, x, target_share={router.llms_[-1]: 0.99})
    with pytest.raises(CalibrationError, match="unknown LLM"):
        calibrate_lam(router, x, target_share={"nope": 0.2})
    with pytest.raises(CalibrationError, match="exactly one"):
        calibrate_lam(router, x)
    with pytest.raises(CalibrationError, match="same at every λ.*single λ = 0.02"):
        calibrate_lam(FixedLamRouter().fit(data.select("train")), x, target_cost=1.0)
    # A budget above the λ = 0 spend does not bind: λ = 0.
    assert calibrate_lam(router, x, target_cost=1e6, n_boot=10).lam == 0.0


def test_save_calibration_sets_the_default_lam(router, data, tmp_path):
    router.save_pretrained(tmp_path)
    x = data.select("test").embeddings
    cal = calibrate_lam(router, x, target_cost=1.0, n_boot=50)
    save_calibration(tmp_path, cal)
    save_calibration(tmp_path, cal)
    loaded = from_pretrained(tmp_path)
    assert loaded.default_lam_ == pytest.approx(cal.lam)
    np.testing.assert_array_equal(loaded.predict(x), router.predict(x, cal.lam))
    record = json.loads((tmp_path / "calibration.json").read_text())
    assert record["current"]["target"] == {"cost_per_1k": 1.0} and len(record["history"]) == 1
    assert "date" in record["current"]


def test_read_queries_formats(tmp_path):
    (tmp_path / "q.txt").write_text("first\n\nsecond\n")
    with pytest.warns(UserWarning, match="1 blank"):
        assert read_queries(tmp_path / "q.txt") == ["first", "second"]
    (tmp_path / "q.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert read_queries(tmp_path / "q.jsonl") == ["a", "b"]
    (tmp_path / "q.csv").write_text("id,question\n1,x\n2,\n")
    with pytest.raises(ValueError, match="row 2"):
        read_queries(tmp_path / "q.csv")


@pytest.mark.parametrize("n, budget_share", [(40, 0.3), (40, 0.7), (300, 0.4)])
def test_batch_budget_never_over_and_beats_single_lam(router, data, n, budget_share):
    test = data.select("test").subset(np.arange(n))
    costs = router.predict_costs(test.embeddings)
    lo, hi = costs.min(axis=1).sum(), costs.max(axis=1).sum()
    budget = lo + budget_share * (hi - lo)
    plan = route_batch_budget(router, test.embeddings, budget)
    assert plan.total_cost <= budget + 1e-12
    assert plan.single_lam_cost <= budget + 1e-12
    assert plan.total_quality >= plan.single_lam_quality - 1e-9
    assert len(plan.assignments) == n


def test_batch_budget_knapsack_is_optimal_on_a_tiny_batch(router, data):
    import itertools

    test = data.select("test").subset(np.arange(5))
    q, c = router.predict_quality(test.embeddings), router.predict_costs(test.embeddings)
    budget = float(c.min(axis=1).sum() * 3)
    best = max(
        (sum(q[i, j] for i, j in enumerate(combo)) for combo in itertools.product(range(q.shape[1]), repeat=5)
         if sum(c[i, j] for i, j in enumerate(combo)) <= budget),
    )
    plan = route_batch_budget(router, test.embeddings, budget, resolution=20000, exact_max_cells=10**7)
    assert plan.total_quality == pytest.approx(best, abs=1e-3)


def test_batch_budget_too_small(router, data):
    x = data.select("test").embeddings[:10]
    with pytest.raises(CalibrationError, match="cannot cover"):
        route_batch_budget(router, x, 1e-9)


def test_calibrate_cli(router, data, tmp_path):
    from radialrouter.cli import app

    model = tmp_path / "model"
    router.save_pretrained(model)
    queries = tmp_path / "q.npy"
    np.save(queries, data.select("test").embeddings)
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--queries", str(queries),
                                 "--target-cost", "1.0", "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    assert "λ" in result.output
    assert json.loads((model / "pool.json").read_text())["default_lam"] > 0
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--queries", str(queries),
                                 "--target-share", "llm-4=0.1", "--no-write", "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--queries", str(queries),
                                 "--target-share", "llm-4:0.2"])
    assert result.exit_code != 0


def _quick_router():
    for name in ("knn", "mlp"):
        if name in available_routers():
            return make_router(name)
    pytest.skip("no quick learned router (knn, mlp) is registered yet")


@needs_shared
@pytest.mark.integration
def test_routerbench_realised_cost_inside_interval():
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.data import load_dataset

    router = _quick_router()
    with pytest.warns(UserWarning):
        ds = load_dataset(ROUTERBENCH3, missing="exclude")  # the rows its coverage was checked on
    ds = ds.embed(QueryEncoder(), progress=False)
    router.fit(ds.select("train"))
    test = ds.select("test")
    for target in (0.5, 1.0, 2.0):
        cal = calibrate_lam(router, test.embeddings, target_cost=target, n_boot=500)
        realised = realised_cost(router, test, cal.lam)
        assert cal.ci_low_per_1k_usd <= realised <= cal.ci_high_per_1k_usd, (target, cal, realised)


# ------------------------------------------------------------------------------------- promises of the records
def test_older_unit_less_names_give_the_same_values(router, data):
    """`expected_cost`, `ci_low`, `ci_high` (earlier releases' names) are the USD-per-1,000 figures, unchanged."""
    cal = calibrate_lam(router, data.select("test").embeddings, target_cost=1.0, n_boot=50)
    assert (cal.expected_cost, cal.ci_low, cal.ci_high) == (
        cal.expected_cost_per_1k_usd, cal.ci_low_per_1k_usd, cal.ci_high_per_1k_usd)
    assert cal.ci_low < cal.ci_high and cal.confidence == 0.95
    record = cal.to_dict()
    assert record["lam"] == cal.lam and record["target"] == {"cost_per_1k": 1.0}


def test_a_retired_calibration_is_no_longer_current_but_stays_on_record(router, data, tmp_path):
    """``current_calibration`` is the record that set the default λ; once retired (e.g. the pool changed) there is
    none, and the retired record moves to the history with the reason, after the older ones."""
    from radialrouter.policy.calibration import current_calibration, retire_calibration

    src, dst = tmp_path / "src", tmp_path / "dst"
    router.save_pretrained(src)
    dst.mkdir()
    assert current_calibration(src) is None and retire_calibration(src, dst, "nothing to retire") is None
    x = data.select("test").embeddings
    first = calibrate_lam(router, x, target_cost=1.0, n_boot=20)
    second = calibrate_lam(router, x, target_cost=2.0, n_boot=20)
    save_calibration(src, first)
    save_calibration(src, second)
    current = current_calibration(src)
    assert current["lam"] == second.lam and current["target"] == {"cost_per_1k": 2.0}
    out = retire_calibration(src, dst, "pool changed: added llm-5")
    assert out == dst / "calibration.json" and current_calibration(dst) is None
    history = json.loads(out.read_text())["history"]
    assert [h["target"] for h in history] == [{"cost_per_1k": 1.0}, {"cost_per_1k": 2.0}]
    assert history[-1]["retired_because"] == "pool changed: added llm-5" and "retired" in history[-1]
    assert "retired" not in history[0]
    assert current_calibration(src)["lam"] == second.lam  # the source model is left as it was
    # retiring a model with no current calibration keeps its history as is
    again = retire_calibration(dst, tmp_path, "again")
    assert json.loads(again.read_text()) == {"current": None, "history": history}
    with pytest.raises(FileNotFoundError, match="not a router directory"):
        save_calibration(tmp_path / "nowhere", first)


def test_calibration_inputs_are_checked(router, data):
    """A target must be a positive spend or a share in [0, 1]; the interval's confidence in (0, 1); there must be
    queries. ``n_boot = 0`` gives no interval: both ends are the estimate."""
    x = data.select("test").embeddings
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CalibrationError, match="target_cost must be a positive number"):
            calibrate_lam(router, x, target_cost=bad)
    for bad in (-0.1, 1.5):
        with pytest.raises(CalibrationError, match=r"target share for 'llm-4' must be in \[0, 1\]"):
            calibrate_lam(router, x, target_share={"llm-4": bad})
    with pytest.raises(CalibrationError, match="exactly one LLM"):
        calibrate_lam(router, x, target_share={"llm-3": 0.1, "llm-4": 0.1})
    with pytest.raises(CalibrationError, match="exactly one of target_cost"):
        calibrate_lam(router, x, target_cost=1.0, target_share={"llm-4": 0.1})
    with pytest.raises(CalibrationError, match="no queries"):
        calibrate_lam(router, x[:0], target_cost=1.0)
    for bad in (0.0, 1.0):
        with pytest.raises(CalibrationError, match=r"confidence must be in \(0, 1\)"):
            calibrate_lam(router, x, target_cost=1.0, confidence=bad)
    point = calibrate_lam(router, x, target_cost=1.0, n_boot=0)
    assert point.ci_low_per_1k_usd == point.expected_cost_per_1k_usd == point.ci_high_per_1k_usd
    assert point.share_ci == (point.share, point.share)


def test_the_interval_is_the_bootstrap_percentile_interval_at_the_confidence_asked(router, data):
    """A wider confidence gives a wider interval around the same estimate; the share interval covers the share."""
    x = data.select("test").embeddings
    narrow = calibrate_lam(router, x, target_cost=1.0, n_boot=400, confidence=0.5)
    wide = calibrate_lam(router, x, target_cost=1.0, n_boot=400, confidence=0.99)
    assert narrow.lam == wide.lam and narrow.expected_cost_per_1k_usd == wide.expected_cost_per_1k_usd
    assert wide.ci_low_per_1k_usd < narrow.ci_low_per_1k_usd < narrow.ci_high_per_1k_usd < wide.ci_high_per_1k_usd
    assert wide.share_ci[0] < narrow.share_ci[0] <= narrow.share <= narrow.share_ci[1] < wide.share_ci[1]
    # the percentile interval of the mean: about ±z·sd/√n around it (z = 2.576 at 99 %)
    per_query = router.predict_costs(x)[np.arange(len(x)), router.predict(x, wide.lam)] * COST_SCALE
    half = 2.576 * per_query.std() / np.sqrt(len(x))
    assert wide.ci_high_per_1k_usd - wide.ci_low_per_1k_usd == pytest.approx(2 * half, rel=0.2)


# ------------------------------------------------------------------------------ the λ found, and batch budgets
def test_a_share_target_gets_the_closest_share_any_lambda_gives(router, data):
    """``target_share``: the λ whose share of calls to that LLM is closest to the target — at least as close as any
    λ of the grid; the report names that LLM (not the most expensive one), and a share reached only at the grid's
    last λ is found there."""
    from radialrouter.policy.calibration import LAM_GRID

    x = data.select("test").embeddings
    for llm, target in (("llm-2", 0.18), ("llm-4", 0.07), ("llm-1", 0.15)):
        j = router.llms_.index(llm)
        cal = calibrate_lam(router, x, target_share={llm: target}, n_boot=20)
        # as close as the grid, and as close as a scan of 1,000 λ between 1e-4 and 1,000
        fine = np.r_[LAM_GRID, np.geomspace(1e-4, 1e3, 1000)]
        best_gap = min(abs(float((router.predict(x, lam) == j).mean()) - target) for lam in fine)
        assert cal.share_llm == llm and abs(cal.share - target) <= best_gap + 1e-12, (llm, cal.share, best_gap)
        assert cal.target == {"share": {llm: target}}
    cheap = router.llms_.index("llm-0")
    top = float((router.predict(x, 1000.0) == cheap).mean())
    cal = calibrate_lam(router, x, target_share={"llm-0": top}, lam_grid=np.array([0.0, 1000.0]), n_boot=0)
    assert cal.share == top and cal.lam == 1000.0


def test_a_cost_target_is_refined_between_the_grid_points(router, data):
    """Between two grid points, bisection finds the λ where spend drops below the target: a coarse grid gives the
    same spend as the default one, at a λ strictly inside the bracket (also the first one, from λ = 0)."""
    x = data.select("test").embeddings
    fine = calibrate_lam(router, x, target_cost=1.0, n_boot=0)  # λ = 0 spends about 1.43
    for grid in ([0.0, 10.0], [0.0, 1e-4, 10.0], [1e-4, 1.0, 10.0]):
        coarse = calibrate_lam(router, x, target_cost=1.0, n_boot=0, lam_grid=np.array(grid))
        assert coarse.expected_cost_per_1k_usd == pytest.approx(fine.expected_cost_per_1k_usd, rel=0.02), grid
        assert coarse.expected_cost_per_1k_usd <= 1.0 and grid[0] < coarse.lam < grid[-1]


def test_the_interval_is_seeded_and_repeats(router, data):
    """Same queries and seed, same interval; another seed, another draw."""
    x = data.select("test").embeddings
    a, b = (calibrate_lam(router, x, target_cost=1.0, n_boot=100) for _ in range(2))
    c = calibrate_lam(router, x, target_cost=1.0, n_boot=100, seed=1)
    assert (a.ci_low_per_1k_usd, a.ci_high_per_1k_usd, a.share_ci) == (b.ci_low_per_1k_usd, b.ci_high_per_1k_usd,
                                                                       b.share_ci)
    assert (a.ci_low_per_1k_usd, a.ci_high_per_1k_usd) != (c.ci_low_per_1k_usd, c.ci_high_per_1k_usd)


class LamConditionedRidge(RidgeRouter):
    """A router conditioned on λ up to ``lam_max`` (like RadialRouter's λ-conditioned mode)."""

    lam_conditioned, lam_max = True, 0.05


def test_the_default_grid_stops_at_a_conditioned_routers_lam_max(data):
    """Beyond the λ a conditioned router was trained on its choices are extrapolation: the default grid stops at
    ``lam_max``, so an unreachable target reports the cheapest routing at λ = lam_max."""
    router = LamConditionedRidge().fit(data.select("train"))
    x = data.select("test").embeddings
    with pytest.raises(CalibrationError, match=r"cheapest routing found \(λ = ") as caught:
        calibrate_lam(router, x, target_cost=0.01)
    import re

    assert float(re.search(r"\(λ = ([0-9.e+-]+)\)", str(caught.value)).group(1)) <= 0.05  # never λ = 1000


def test_a_router_deaf_to_lambda_is_refused_with_the_grid_it_tried(router, data):
    """Choices identical at the grid's first and last λ: refused, naming both λ; the single-λ note only for a
    router trained for one λ."""
    x = data.select("test").embeddings
    with pytest.raises(CalibrationError, match=r"\(λ = 0 and 1000 give identical choices\): it was trained for"):
        calibrate_lam(FixedLamRouter().fit(data.select("train")), x, target_cost=1.0)
    with pytest.raises(CalibrationError, match=r"\(λ = 0\.5 and 0\.5 give identical choices\), so no λ") as caught:
        calibrate_lam(router, x, target_cost=1.0, lam_grid=np.array([0.5, 0.5]))
    assert "trained for" not in str(caught.value)


def test_save_calibration_keeps_every_earlier_record(router, data, tmp_path):
    """Three calibrations: the last is current, the two earlier ones are the history, oldest first."""
    router.save_pretrained(tmp_path)
    x = data.select("test").embeddings
    for target in (1.0, 2.0, 3.0):
        save_calibration(tmp_path, calibrate_lam(router, x, target_cost=target, n_boot=10))
    record = json.loads((tmp_path / "calibration.json").read_text())
    assert record["current"]["target"] == {"cost_per_1k": 3.0}
    assert [h["target"] for h in record["history"]] == [{"cost_per_1k": 1.0}, {"cost_per_1k": 2.0}]


def test_a_budget_covering_every_best_choice_buys_exactly_those(router, data):
    """When the budget is exactly what every query's best predicted LLM costs, the plan is those LLMs at λ = 0."""
    test = data.select("test").subset(np.arange(30))
    q, c = router.predict_quality(test.embeddings), router.predict_costs(test.embeddings)
    best = q.argmax(axis=1)
    budget = float(c[np.arange(30), best].sum())
    plan = route_batch_budget(router, test.embeddings, budget)
    assert plan.lam == 0.0 and plan.choices.tolist() == best.tolist()
    assert plan.method == "lagrangian+greedy"  # the exact knapsack finds no more quality: it does not replace it
    assert plan.budget_usd == budget and plan.total_cost == pytest.approx(budget)
    summary = plan.summary()
    assert summary["budget_usd"] == budget and "choices" not in summary and "llms" not in summary
    assert plan.assignments == [router.llms_[j] for j in best]


def test_the_single_lambda_baseline_is_the_best_single_lambda_within_the_budget(router, data):
    """The baseline is the router's own routing at the single λ with the highest spend within the budget, also when
    the budget barely covers the cheapest LLM for every query."""
    from radialrouter.policy.calibration import LAM_GRID

    test = data.select("test").subset(np.arange(60))
    x = test.embeddings
    c = router.predict_costs(x)
    lo, hi = c.min(axis=1).sum(), c.max(axis=1).sum()
    budget = lo + 0.4 * (hi - lo)
    plan = route_batch_budget(router, x, budget)
    spends = [float(c[np.arange(60), router.predict(x, lam)].sum()) for lam in LAM_GRID]
    best_within = max(s for s in spends if s <= budget)
    assert plan.single_lam_cost == pytest.approx(best_within, rel=1e-3)
    tight = route_batch_budget(router, x, float(lo) * 1.0000001)
    assert tight.total_cost <= lo * 1.0000001 + 1e-12 and tight.single_lam_cost <= lo * 1.0000001 + 1e-12


def test_the_exact_knapsack_is_used_when_it_finds_more_quality(router, data):
    """On a batch small enough for the exact knapsack, its plan is kept when it predicts more quality than the
    Lagrangian + greedy plan, and the plan says which method made it."""
    test = data.select("test").subset(np.arange(40, 80))
    budget = float(router.predict_costs(test.embeddings).min(axis=1).sum() * 3)
    exact = route_batch_budget(router, test.embeddings, budget, resolution=2000, exact_max_cells=10**7)
    greedy = route_batch_budget(router, test.embeddings, budget, exact_max_cells=0)
    assert greedy.method == "lagrangian+greedy" and exact.method == "knapsack"
    assert exact.total_quality > greedy.total_quality and exact.total_cost <= budget + 1e-12


def test_a_budget_that_rounding_makes_infeasible_still_gets_a_plan(router, data):
    """The exact knapsack rounds costs up to budget / resolution; when that makes the budget look too small, the
    Lagrangian plan stands: still one LLM per query, never over the budget."""
    test = data.select("test").subset(np.arange(8))
    c = router.predict_costs(test.embeddings)
    budget = float(c.min(axis=1).sum())
    plan = route_batch_budget(router, test.embeddings, budget, resolution=3)
    assert plan.total_cost <= budget + 1e-12 and len(plan.choices) == 8


def test_batch_budgets_use_predicted_quality_at_lambda_zero_whatever_the_default(data):
    """A router without ``predict_quality`` is ranked by its scores at λ = 0: a calibrated default λ changes
    nothing in a batch plan."""
    router = make_router("knn").fit(data.select("train"))
    assert not hasattr(router, "predict_quality")
    x = data.select("test").embeddings[:40]
    c = router.predict_costs(x)
    budget = float(c.min(axis=1).sum() + 0.3 * (c.max(axis=1).sum() - c.min(axis=1).sum()))
    before = route_batch_budget(router, x, budget)
    router.default_lam_ = 5.0
    after = route_batch_budget(router, x, budget)
    assert after.choices.tolist() == before.choices.tolist() and after.total_quality == before.total_quality
