"""Reference routers under the shared interface: Oracle, Random (expected value), Best single, Task-best."""

from __future__ import annotations

import numpy as np
import pytest

from radialrouter.data import RoutingDataset, make_synthetic
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import RouterError, available_routers, from_pretrained, make_router


@pytest.fixture
def tiny() -> RoutingDataset:
    quality = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]], dtype=float)
    cost = np.tile([0.001, 0.002, 0.004], (4, 1))
    return RoutingDataset.from_arrays([f"q{i}" for i in range(4)], quality, ["a", "b", "c"], cost=cost,
                                      tasks=["t1", "t1", "t2", "t2"], split=["train"] * 4)


def test_registry():
    assert {"oracle", "random", "best-single", "task-best"} <= set(available_routers())
    with pytest.raises(RouterError, match="unknown router 'nope'"):
        make_router("nope")


def test_oracle_picks_best_and_cheapest_on_ties(tiny):
    oracle = make_router("oracle").fit(tiny)
    assert oracle.predict(tiny, lam=0).tolist() == [0, 1, 0, 2]
    # at a high λ, cheap wrong answers win
    assert oracle.predict(tiny, lam=1.0).tolist() == [0, 0, 0, 0]


def test_random_is_the_expected_value(tiny):
    rows = evaluate_router(make_router("random").fit(tiny), tiny, [0.0])
    assert rows[0]["perf"] == pytest.approx(np.mean([tiny.quality[tiny.tasks == t].mean() for t in ("t1", "t2")]))
    decisions = make_router("random", seed=1).fit(tiny).route(["x"] * 50)
    assert len({d.llm for d in decisions}) > 1


def test_best_single_depends_on_lambda(tiny):
    router = make_router("best-single").fit(tiny)
    assert set(router.predict(tiny, lam=0).tolist()) == {2}
    assert set(router.predict(tiny, lam=1.0).tolist()) == {0}


def test_task_best_uses_tasks_and_falls_back(tiny):
    router = make_router("task-best").fit(tiny)
    assert router.predict(tiny, lam=0).tolist() == [1, 1, 2, 2]
    other = RoutingDataset.from_arrays(["z"], np.zeros((1, 3)), ["a", "b", "c"], tasks=["unseen"])
    assert router.predict(other, lam=0).tolist() == [2]
    with pytest.raises(RouterError, match="pass a RoutingDataset"):
        router.predict(["text"], lam=0)


def test_route_decisions_candidates_and_errors(tiny):
    router = make_router("best-single").fit(tiny)
    d = router.route(["hello"], lam=0)[0]
    assert d.llm == "c" and d.ranking == ["c", "a", "b"]  # a and b tie on quality: the cheaper one ranks first
    d = router.route(["hello"], lam=0, candidates=["b", "c"])[0]
    assert d.ranking == ["c", "b"] and set(d.scores) == {"b", "c"}
    assert d.expected_cost_usd == pytest.approx(0.004)
    with pytest.raises(RouterError, match="unknown candidate"):
        router.route(["hello"], candidates=["zzz"])
    with pytest.raises(RouterError, match="not fitted"):
        make_router("best-single").route(["hello"])


@pytest.mark.parametrize("name", ["oracle", "random", "best-single", "task-best"])
def test_save_and_load_roundtrip(tmp_path, name):
    ds = make_synthetic(n_queries=120, seed=2)
    router = make_router(name).fit(ds.select("train"))
    router.save_pretrained(tmp_path / name)
    for f in ("config.json", "pool.json", "training.json", "model.safetensors"):
        assert (tmp_path / name / f).exists()
    loaded = from_pretrained(tmp_path / name)
    test = ds.select("test")
    for lam in (0, 0.02, 0.1):
        if name == "random":
            continue
        assert (loaded.predict(test, lam) == router.predict(test, lam)).all()
    with pytest.raises(RouterError, match="not a router directory"):
        from_pretrained(tmp_path)


def test_oracle_dominates_on_synthetic():
    ds = make_synthetic(n_queries=400, seed=0)
    train, test = ds.select("train"), ds.select("test")
    scores = {n: evaluate_router(make_router(n).fit(train), test, [0.02])[0]["score"]
              for n in ("oracle", "best-single", "random")}
    assert scores["oracle"] > scores["best-single"] > scores["random"]
