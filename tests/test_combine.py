"""Combining data sets whose LLM pools differ (`radialrouter.data.combine`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from radialrouter.data import DataError
from radialrouter.data.combine import combine_datasets, source_of, split_by_source
from radialrouter.data.synthetic import make_synthetic


def _renamed(ds, names):
    return replace(ds, llms=tuple(names))


def test_union_pool_unobserved_cells_and_round_trip():
    a = _renamed(make_synthetic(n_queries=60, n_llms=3, seed=0), ["x", "y", "z"])
    b = _renamed(make_synthetic(n_queries=40, n_llms=2, seed=1), ["z", "w"])
    both = combine_datasets({"a": a, "b": b})
    assert both.llms == ("x", "y", "z", "w")
    assert len(both) == 100
    # a never logged w, b never logged x or y: unobserved, never invented
    assert np.isnan(both.quality[:60, 3]).all() and np.isnan(both.quality[60:, :2]).all()
    np.testing.assert_array_equal(both.quality[:60, :3], a.quality)
    np.testing.assert_array_equal(both.quality[60:, 2:], b.quality)
    # the stand-in cost of an unobserved cell is that LLM's mean cost on its own source
    assert both.cost[0, 3] == pytest.approx(b.cost[:, 1].mean())
    assert set(source_of(both)) == {"a", "b"}
    assert all(t.startswith(("a/", "b/")) for t in both.tasks)
    np.testing.assert_array_equal(both.embeddings[60:], b.embeddings)
    back = split_by_source(both, "b")
    assert back.llms == ("z", "w")
    np.testing.assert_array_equal(back.quality, b.quality)
    np.testing.assert_array_equal(split_by_source(both, "a", ("x", "y", "z")).cost, a.cost)


def test_aliases_match_differently_spelled_llms():
    a = _renamed(make_synthetic(n_queries=30, n_llms=2, seed=0), ["org/Model-7B", "big"])
    b = _renamed(make_synthetic(n_queries=30, n_llms=2, seed=1), ["Model-7B", "small"])
    both = combine_datasets({"a": a, "b": b}, aliases={"org/Model-7B": "Model-7B"})
    assert both.llms == ("Model-7B", "big", "small")
    assert np.isfinite(both.quality[:, 0]).all()


def test_bad_combinations_are_refused():
    a = _renamed(make_synthetic(n_queries=30, n_llms=2, seed=0), ["p", "q"])
    with pytest.raises(DataError, match="several of its LLMs"):
        combine_datasets({"a": a}, aliases={"p": "q"})
    with pytest.raises(DataError, match="must not contain"):
        combine_datasets({"a/b": a})
    with pytest.raises(DataError, match="embed every source or none"):
        combine_datasets({"a": a, "b": replace(a, embeddings=None)})
    with pytest.raises(DataError, match="no data sets"):
        combine_datasets({})
    with pytest.raises(DataError, match="no rows from source"):
        split_by_source(combine_datasets({"a": a}), "zz")


def test_one_radial_router_trains_on_pools_that_differ_per_query():
    from radialrouter.evaluation import evaluate_router
    from radialrouter.routers import make_router

    a = _renamed(make_synthetic(n_queries=240, n_llms=3, seed=0), ["x", "y", "z"])
    b = _renamed(make_synthetic(n_queries=240, n_llms=2, seed=1), ["v", "w"])
    both = combine_datasets({"a": a, "b": b})
    assert not both.complete_rows.any()  # no query has every LLM: only masked training can use this
    rng = np.random.default_rng(0)
    both = both.with_split(np.where(rng.random(len(both)) < 0.15, "val", both.split))
    router = make_router("radial", seed=0, steps=60, eval_every=20).fit(both.select("train"), both.select("val"))
    assert router.llms_ == ["x", "y", "z", "v", "w"]
    assert np.isfinite(router.training_["val_score"])  # early stopping saw every validation query
    test = both.select("test")
    chosen = router.predict(test, 0.0, candidates=test.observed)
    assert test.observed[np.arange(len(test)), chosen].all()  # never an LLM the query's source lacks
    random = make_router("random", seed=0).fit(both.select("train"))
    for part in ("a", "b"):  # one router learned both pools: on each source it routes well above a random pick
        source = split_by_source(test, part, tuple(router.llms_))
        learned, chance = (evaluate_router(r, source, [0.0])[0]["score"] for r in (router, random))
        assert learned > chance + 0.05, (part, learned, chance)
