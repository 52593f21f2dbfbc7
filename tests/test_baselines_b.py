"""kNN, MLP, MF, ridge, HybridLLM and FrugalGPT: they learn on synthetic data, survive save → load, and FrugalGPT pays
for every LLM its cascade calls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from radialrouter.data import make_synthetic, with_validation
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import from_pretrained, make_router
from radialrouter.routers.registry import make_seeded

BASELINES = ["knn", "mlp", "mf", "ridge", "hybrid", "frugal"]
FAST = {"mlp": {"steps": 600}, "mf": {"steps": 600}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits():
    ds = with_validation(make_synthetic(n_queries=600, seed=0), val_size=0.15, seed=0)
    return ds.select("train"), ds.select("val"), ds.select("test")


@pytest.fixture(scope="module")
def fitted(splits):
    train, val, _ = splits
    return {name: make_router(name, **FAST.get(name, {})).fit(train, val) for name in BASELINES}


@pytest.mark.parametrize("name", BASELINES)
def test_beats_random(name, fitted, splits):
    test = splits[2]
    random = {r["lam"]: r["score"] for r in evaluate_router(make_router("random").fit(splits[0]), test, [0, 0.02])}
    for row in evaluate_router(fitted[name], test, [0, 0.02]):
        assert row["score"] > random[row["lam"]] + 0.05, (name, row["lam"], row["score"], random[row["lam"]])


@pytest.mark.parametrize("name", BASELINES)
def test_save_load_identical(name, fitted, splits, tmp_path):
    router, test = fitted[name], splits[2]
    loaded = from_pretrained(router.save_pretrained(tmp_path / name))
    assert type(loaded) is type(router)
    for lam in (0.0, 0.02, 0.1):
        np.testing.assert_allclose(loaded.predict_scores(test, lam), router.predict_scores(test, lam), atol=1e-6)
        np.testing.assert_array_equal(loaded.predict(test, lam), router.predict(test, lam))
    np.testing.assert_allclose(loaded.predict_costs(test), router.predict_costs(test))


@pytest.mark.parametrize("name", BASELINES)
def test_route_decisions(name, fitted, splits):
    router, test = fitted[name], splits[2]
    decisions = router.route(test.embeddings[:5], lam=0.02)
    assert [d.llm for d in decisions] == [router.llms_[j] for j in router.predict(test.embeddings[:5], 0.02)]
    assert all(d.expected_cost_usd > 0 and len(d.ranking) == len(router.llms_) for d in decisions)
    only = router.route(test.embeddings[:5], lam=0.0, candidates=["llm-0", "llm-1"])
    assert {d.llm for d in only} <= {"llm-0", "llm-1"}


def test_frugal_pays_for_every_call(fitted, splits):
    router, test = fitted["frugal"], splits[2]
    escalated = np.zeros(len(test), dtype=bool)
    for lam in (0.0, 0.02, 0.1):
        out = router.outcomes(test, lam)
        accepted = out.weights.argmax(axis=1)
        rows = np.arange(len(test))
        # FrugalGPT pays for every LLM it called: the cascade's stages up to and including the accepted one.
        stage = np.array([router.cascade_.tolist().index(j) for j in accepted])
        called = np.arange(len(router.cascade_))[None, :] <= stage[:, None]
        np.testing.assert_allclose(out.cost, (test.cost[:, router.cascade_] * called).sum(axis=1), rtol=1e-12)
        escalated |= stage > 0
        np.testing.assert_allclose(out.perf, test.quality[rows, accepted])
        # Ranking puts the accepted LLM first, matching the cascade.
        np.testing.assert_array_equal(router.predict(test, lam), accepted)
    # Cheaper operating points at higher λ: the cascade stops earlier.
    assert router.outcomes(test, 0.1).cost.mean() <= router.outcomes(test, 0.0).cost.mean() + 1e-12
    assert 1 <= len(router.cascade_) <= router.max_stages
    assert escalated.mean() > 0.1  # the cascade does call more than one LLM on many queries


def test_hybrid_pair_and_threshold(fitted):
    router = fitted["hybrid"]
    assert router.small_ == int(np.argmin(router.mean_cost_))
    assert router.large_ == int(np.argmax(router.mean_quality_))
    # Higher λ favours the small model: its threshold can only go down.
    assert router.threshold(0.1) <= router.threshold(0.0)


def test_knn_neighbour_means(splits, fitted):
    train = splits[0]
    router = make_router("knn", k=1).fit(train)
    # A training query's single nearest neighbour is itself.
    np.testing.assert_allclose(router.predict_costs(train.embeddings[:10]), train.cost[:10])
    np.testing.assert_allclose(router.predict_scores(train.embeddings[:10], 0.0), train.quality[:10])
    # k=None: chosen on the validation split from the grid, and saved.
    assert fitted["knn"].k_ in fitted["knn"].K_GRID


def test_needs_embeddings(splits):
    bare = dataclasses.replace(splits[0], embeddings=None)
    with pytest.raises(ValueError, match="no embeddings"):
        make_router("knn").fit(bare)


@pytest.mark.parametrize("name", BASELINES)
def test_quality_only_fractional_data(name):
    """RouterDC-style data: fractional quality, no cost (FrugalGPT's cascade shrinks to the best LLM)."""
    ds = with_validation(make_synthetic(n_queries=300, seed=1, binary=False), val_size=0.15, seed=0)
    ds = dataclasses.replace(ds, cost=np.zeros_like(ds.cost), has_cost=False)
    router = make_router(name, **FAST.get(name, {})).fit(ds.select("train"), ds.select("val"))
    test = ds.select("test")
    perf = evaluate_router(router, test, [0.0])[0]["perf"]
    assert perf >= test.quality.mean(axis=0).max() - 0.02
    if name == "frugal":
        assert len(router.cascade_) == 1


def _one_best_llm_data(seed: int = 0):
    """Four topics; a pricey LLM best on every query (0.9), a cheap one good (0.85) on topics 0–1 and a mid one on
    topics 2–3 (0.15 elsewhere): at λ = 0 the pricey one always wins, at Balance the topic decides."""
    from radialrouter.data import RoutingDataset, grouped_split

    rng = np.random.default_rng(seed)
    n, dim = 900, 16
    centers = rng.normal(size=(4, dim))
    topic = rng.integers(0, 4, size=n)
    emb = (centers[topic] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    p = np.stack([np.where(topic < 2, 0.85, 0.15), np.where(topic >= 2, 0.85, 0.15), np.full(n, 0.9)], axis=1)
    quality = (rng.random((n, 3)) < p).astype(float)
    cost = np.array([1e-4, 2e-4, 5e-3]) * rng.uniform(0.9, 1.1, size=(n, 3))
    ds = RoutingDataset.from_arrays([f"q{i} topic {t}" for i, t in enumerate(topic)], quality,
                                    ["cheap", "mid", "pricey"], cost=cost)
    return with_validation(grouped_split(ds, test_size=0.3, seed=seed).with_embeddings(emb))


@pytest.mark.parametrize("name", ["mlp", "mf", "ridge"])
def test_quality_regressors_serve_every_named_tradeoff(name):
    """The checkpoint an MLP/MF keeps must route well at Balance and Cost First too, not only at λ = 0: a checkpoint
    chosen on Performance First alone may rank the best LLM first while its quality estimates still sit near their
    start — the cost then decides every other trade-off, and everything goes to the cheapest LLM."""
    ds = _one_best_llm_data()
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    router = make_seeded(name, 0).fit(train, val)
    single = make_router("best-single").fit(train)
    for scenario in ("balance", "cost-first"):
        lam = router.presets_[scenario]
        picks = router.predict(test, lam)
        assert len(set(picks.tolist())) > 1, f"{name} sends every query to one LLM at {scenario}"
        assert evaluate_router(router, test, [lam])[0]["score"] > evaluate_router(single, test, [lam])[0]["score"]


def test_frugal_cascades_of_one_and_two_stages():
    """``max_stages=1``: a cascade of one LLM that answers every query (and is paid once); ``max_stages=2``: the LLMs
    outside the cascade rank after its stages, by their training mean Score at that λ. Every query is answered by
    exactly one LLM (call shares sum to 1); fewer than one stage is refused."""
    from radialrouter.core.objective import utility
    from radialrouter.routers import RouterError

    ds = make_synthetic(n_queries=300, seed=5)
    train, test = ds.select("train"), ds.select("test")
    one = make_router("frugal", max_stages=1, folds=2).fit(train)
    (j,) = one.cascade_.tolist()
    out = one.outcomes(test, 0.02)
    assert out.weights.sum(axis=1).tolist() == [1.0] * len(test) and set(out.weights.argmax(axis=1)) == {j}
    np.testing.assert_allclose(out.cost, test.cost[:, j])
    two = make_router("frugal", max_stages=2, folds=2).fit(train)
    assert len(two.cascade_) == 2 and len(two.llms_) == 4
    outside = [k for k in range(4) if k not in two.cascade_.tolist()]
    for lam in (0.0, 0.1):
        by_score = sorted(outside, key=lambda k: -utility(train.quality[:, k].mean(), train.cost[:, k].mean(), lam))
        for d in two.route(test.embeddings[:10], lam=lam):
            assert d.ranking[2:] == [two.llms_[k] for k in by_score], (lam, d.ranking)
        row = evaluate_router(two, test, [lam])[0]
        assert sum(row["call_share"].values()) == pytest.approx(1.0)
    with pytest.raises(RouterError, match="max_stages must be ≥ 1"):
        make_router("frugal", max_stages=0).fit(train)


@pytest.mark.parametrize("name", BASELINES)
def test_route_reports_the_scores_and_costs_predict_gives(name, fitted, splits):
    """`route` computes scores and costs in one pass where it can; they stay those of `predict_scores` and
    `predict_costs` (the ranking's order, the expected cost of the pick), candidates or not."""
    router, x = fitted[name], splits[2].embeddings[:8]
    for candidates in (None, ["llm-1", "llm-2"]):
        scores, costs = router.predict_scores(x, 0.02, candidates), router.predict_costs(x)
        for i, d in enumerate(router.route(x, lam=0.02, candidates=candidates)):
            assert d.scores == {n: scores[i, j] for j, n in enumerate(router.llms_) if np.isfinite(scores[i, j])}
            assert d.expected_cost_usd == costs[i, router.llms_.index(d.llm)]


def test_quality_only_follows_the_pool_costs(fitted):
    """λ stops mattering exactly when every cost is 0, and the answer follows a new cost array (a pool change)."""
    router = fitted["mlp"]
    before = router.mean_cost_
    try:
        assert not router.quality_only and router.resolve_lam(0.05) == 0.05
        router.mean_cost_ = np.zeros_like(before)
        assert router.quality_only and router.resolve_lam(0.05) == 0.0
    finally:
        router.mean_cost_ = before
    assert not router.quality_only
