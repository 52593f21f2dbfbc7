"""Estimated costs for quality-only logs: price files (flat or in sections), token counts, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from radialrouter.data import DataError, RoutingDataset, load_splits
from radialrouter.data.prices import count_prompt_tokens, load_prices, with_prices


def _quality_only(n: int = 20) -> RoutingDataset:
    rng = np.random.default_rng(0)
    prompts = [f"question {i} " + "word " * (5 * i) for i in range(n)]
    return RoutingDataset.from_arrays(prompts, rng.random((n, 2)), ["small", "large"])


def test_costs_are_prices_times_counted_tokens(tmp_path):
    ds = _quality_only()
    assert not ds.has_cost
    (tmp_path / "p.json").write_text(json.dumps({"small": [0.1, 0.2], "large": [10, 30]}))
    priced, model = with_prices(ds, tmp_path / "p.json", output_tokens=100)
    tokens = count_prompt_tokens(list(ds.prompts))
    assert priced.has_cost and tokens[5] > tokens[0] > 0
    np.testing.assert_allclose(priced.cost[:, 1], (tokens * 10 + 100 * 30) / 1e6)
    np.testing.assert_allclose(priced.cost[:, 0], (tokens * 0.1 + 100 * 0.2) / 1e6)
    assert "100 output tokens" in model.describe() and priced.cost_model == model.describe()
    assert priced.fingerprint() != ds.fingerprint()


def test_price_file_errors_name_what_is_wrong(tmp_path):
    ds = _quality_only()
    cases = {"missing.json": None, "bad.json": "{not json", "lacks.json": json.dumps({"small": [1, 1]}),
             "shape.json": json.dumps({"small": [1, 1], "large": [1]})}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match="missing.json: cannot read"):
        with_prices(ds, tmp_path / "missing.json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        with_prices(ds, tmp_path / "bad.json")
    with pytest.raises(DataError, match=r"lacks.json: no price for \['large'\]"):
        with_prices(ds, tmp_path / "lacks.json")
    with pytest.raises(DataError, match="'large' must be \\[input, output\\]"):
        with_prices(ds, tmp_path / "shape.json")
    (tmp_path / "ok.json").write_text(json.dumps({"small": [1, 1], "large": [2, 2]}))
    priced, _ = with_prices(ds, tmp_path / "ok.json")
    with pytest.raises(DataError, match="already logs costs"):
        with_prices(priced, tmp_path / "ok.json")


@pytest.mark.skipif(not (SHARED_DATA / "prices.json").exists(), reason=f"shared data not found at {SHARED_DATA}")
def test_shared_price_file_sections_cover_llmrouter9():
    full, train, _, test = load_splits(str(SHARED_DATA / "llmrouter9.parquet"), prices=SHARED_DATA / "prices.json")
    prices, section = load_prices(SHARED_DATA / "prices.json", list(full.llms))
    assert section == "llmrouter9" and full.has_cost and (test.cost > 0).all()
    assert "llmrouter9" in full.cost_model and "256 output tokens" in full.cost_model
    with pytest.raises(DataError, match="--output-tokens needs --prices"):
        load_splits(str(SHARED_DATA / "llmrouter9.parquet"), output_tokens=10)
