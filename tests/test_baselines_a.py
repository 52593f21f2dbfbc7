"""Learned baselines of the field (CosineClassifier, RouterDC, GraphRouter, EquiRouter) and the budget sweep."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from radialrouter.data import make_synthetic, with_validation
from radialrouter.evaluation import evaluate_router
from radialrouter.evaluation.budget_sweep import budget_sweep, choose_within_budget
from radialrouter.routers import Router, make_router
from radialrouter.routers.graph import utility_weights
from radialrouter.routers.routerdc import cluster_loss, sample_llm_loss

FAST = {
    "cosine": {"steps": 200},
    "routerdc": {"steps": 200},
    "graph": {"steps": 200},
    "equi": {"epochs": 40},
}
PER_LAMBDA = {"cosine", "routerdc", "graph"}


@pytest.fixture(scope="module")
def splits():
    torch.set_num_threads(1)
    ds = with_validation(make_synthetic(n_queries=400, n_llms=4, seed=0))
    return ds.select("train"), ds.select("val"), ds.select("test")


@pytest.fixture(scope="module")
def fitted(splits):
    """One router per (name, λ): per-scenario routers are trained for each λ, EquiRouter once."""
    train, val, _ = splits
    out = {}
    for name, params in FAST.items():
        for lam in (0.0, 0.02):
            if name in PER_LAMBDA:
                out[name, lam] = make_router(name, lam=lam, **params).fit(train, val)
            elif lam == 0.0:
                out[name, 0.0] = out[name, 0.02] = make_router(name, **params).fit(train, val)
    return out


def _score(router: Router, test, lam: float) -> float:
    return evaluate_router(router, test, [lam])[0]["score"]


@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("lam", [0.0, 0.02])
def test_beats_random(fitted, splits, name, lam):
    train, _, test = splits
    random = make_router("random").fit(train)
    assert _score(fitted[name, lam], test, lam) > _score(random, test, lam) + 0.05


@pytest.mark.parametrize("name", list(FAST))
def test_save_load_identical(fitted, splits, tmp_path, name):
    _, _, test = splits
    router = fitted[name, 0.02]
    loaded = Router.from_pretrained(router.save_pretrained(tmp_path / name))
    assert type(loaded) is type(router)
    np.testing.assert_allclose(loaded.predict_scores(test, 0.02), router.predict_scores(test, 0.02), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(test, 0.02), router.predict(test, 0.02))
    np.testing.assert_allclose(loaded.predict_costs(test), router.predict_costs(test))


@pytest.mark.parametrize("name", ["equi", "routerdc", "mlp"])
def test_budget_sweep_cost_grows_with_budget(fitted, splits, name):
    train, val, test = splits
    router = fitted[name, 0.0] if name in FAST else make_router(name, steps=200).fit(train, val)
    rows = budget_sweep(router, test, n=10)
    budgets = [r["budget"] for r in rows]
    costs = [r["cost"] for r in rows]
    assert budgets == sorted(budgets) and len(rows) >= 2
    assert costs[-1] >= costs[0]
    assert all(b >= a - 0.05 * max(costs) for a, b in zip(costs, costs[1:]))  # monotone up to noise
    for r in rows:
        assert 0.0 <= r["most_expensive_share"] <= 1.0


def test_equi_route_budget_respects_predicted_cost(fitted, splits):
    _, _, test = splits
    router = fitted["equi", 0.0]
    predicted = router.predict_costs(test)
    budget = float(np.median(predicted))
    choice = router.route_budget(test, budget)
    rows = np.arange(len(test))
    fits = predicted[rows, choice] <= budget
    cheapest = choice == predicted.argmin(axis=1)
    assert np.all(fits | cheapest)
    with pytest.raises(ValueError, match="budget_usd"):
        router.route_budget(test, -1.0)


def test_equi_scores_are_quality_minus_cost(fitted, splits):
    _, _, test = splits
    router = fitted["equi", 0.0]
    diff = router.predict_scores(test, 0.0) - router.predict_scores(test, 0.1)
    np.testing.assert_allclose(diff, 0.1 * 1000 * router.predict_costs(test), rtol=1e-9)


def test_choose_within_budget_falls_back_to_cheapest():
    scores = np.array([[0.1, 0.9, 0.5], [0.9, 0.2, 0.3]])
    costs = np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])
    np.testing.assert_array_equal(choose_within_budget(scores, costs, 2.0), [2, 1])


def test_graph_utility_weights_match_paper_scenarios():
    assert utility_weights(0.0) == pytest.approx((1.0, 0.0))
    assert utility_weights(0.02) == pytest.approx((0.5, 0.5))
    assert utility_weights(0.1) == pytest.approx((0.2, 0.8))
    a, b = utility_weights(0.05)
    assert 0.2 < a < 0.5 and a + b == pytest.approx(1.0)
    assert utility_weights(1.0)[1] > 0.8


def test_routerdc_losses_are_finite_and_skip_empty_contrasts():
    torch.manual_seed(0)
    sim = torch.randn(4, 5, requires_grad=True)
    score = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0.5, 0.2, 0.1, 0, 0.9]])
    cost = torch.arange(5.0).expand(4, 5)
    loss = sample_llm_loss(sim, score, cost, k=2)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.all(sim.grad[1] == 0) and torch.all(sim.grad[2] == 0)  # nothing positive / nothing worse
    q = torch.nn.functional.normalize(torch.randn(6, 3), dim=-1)
    assert torch.isfinite(cluster_loss(q, torch.tensor([0, 0, 1, 1, 2, 2]), 3, 0.1))
    assert cluster_loss(q, torch.zeros(6, dtype=torch.long), 3, 0.1) == 0  # one cluster: no negatives


def test_routerdc_rejects_bad_top_k(splits):
    train, val, _ = splits
    with pytest.raises(ValueError, match="top_k"):
        make_router("routerdc", top_k=9, steps=1).fit(train, val)


def test_untrained_and_embeddingless_errors(splits):
    train, _, _ = splits
    no_emb = replace(train, embeddings=None)
    for name in FAST:
        with pytest.raises(ValueError, match="embeddings"):
            make_router(name).fit(no_emb)
