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
