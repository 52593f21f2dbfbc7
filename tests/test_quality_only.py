"""Quality-only data (no cost column, or every cost 0): one trade-off exists, and λ changes no router's pick."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import LLMS, wide_frame
from typer.testing import CliRunner

from radialrouter.core.objective import QUALITY_ONLY, resolve_lam, tradeoff_presets
from radialrouter.data import make_synthetic, with_validation
from radialrouter.routers import make_router

pytestmark = pytest.mark.usefixtures("one_thread")
LAMS = (0.0, 0.02, 0.1)


@pytest.fixture(scope="module")
def quality_only():
    ds = with_validation(make_synthetic(n_queries=400, dim=32, seed=3), val_size=0.15)
    return dataclasses.replace(ds, cost=np.zeros_like(ds.cost), has_cost=False)


def test_one_named_tradeoff_and_every_name_resolves_to_it(quality_only):
    presets = tradeoff_presets(quality_only.quality, quality_only.cost)
    assert presets == QUALITY_ONLY and list(presets.values()) == [0.0]
    for name in ("performance-first", "balance", "cost-first", "BA"):
        assert resolve_lam(name, presets=presets) == 0.0


@pytest.mark.parametrize("name, params", [
    ("radial", {"d_model": 32, "n_heads": 2, "steps": 150, "eval_every": 50, "patience": None}),
    ("mlp", {}),
    ("knn", {}),
])
def test_lambda_changes_no_pick_on_quality_only_data(quality_only, name, params):
    train, val, test = (quality_only.select(s) for s in ("train", "val", "test"))
    router = make_router(name, **params).fit(train, val)
    assert router.presets_ == QUALITY_ONLY
    picks = [router.predict(test, lam) for lam in LAMS]
    for other in picks[1:]:
        np.testing.assert_array_equal(other, picks[0])
    scores = [router.predict_scores(test, lam) for lam in LAMS]
    for other in scores[1:]:
        np.testing.assert_array_equal(other, scores[0])


def _quality_only_file(tmp_path, layout: str) -> str:
    """No cost column, or cost columns that are all 0: both are quality-only data."""
    df = wide_frame(n=80)
    for llm in LLMS:
        if layout == "no cost column":
            df = df.drop(columns=f"{llm}|total_cost")
        else:
            df[f"{llm}|total_cost"] = 0.0
    df.to_parquet(tmp_path / "q.parquet")
    return str(tmp_path / "q.parquet")


@pytest.mark.parametrize("layout", ["no cost column", "zero costs"])
def test_eval_and_train_show_one_tradeoff(tmp_path, layout):
    from radialrouter.cli import app

    data = _quality_only_file(tmp_path, layout)
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--data", data, "--routers", "oracle,best-single,random",
                                 "--json", str(tmp_path / "r.json"), "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["meta"]["presets"] == QUALITY_ONLY
    assert {r["lam"] for r in doc["results"]} == {0.0} and len(doc["results"]) == 3
    assert "BA" not in result.output and "CF" not in result.output and "quality only" in result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "BA" not in report and "λ=0.02" not in report and "quality only" in report

    trained = runner.invoke(app, ["train", "--data", data, "--router", "knn", "--out", str(tmp_path / "m")])
    assert trained.exit_code == 0, trained.output
    assert "BA" not in trained.output and "CF" not in trained.output and "quality only" in trained.output
    tested = json.loads((tmp_path / "m" / "training.json").read_text())["test"]
    assert list(tested) == ["0"]


def test_gateway_routes_every_tradeoff_name_of_a_quality_only_router(tmp_path):
    from radialrouter.serve import parse_config
    from radialrouter.serve.routing import parse_model

    common = {"api_key": "${K}", "input_price": 1.0, "output_price": 2.0, "base_url": "http://127.0.0.1:9/v1",
              "context_window": 1000}
    config = parse_config({"router": {"path": str(tmp_path)}, "llms": [
        {"name": "a", "router_llm": "llm-0", **common}, {"name": "b", "router_llm": "llm-1", **common}]},
        env={"K": "k"}).with_router_tradeoffs(dict(QUALITY_ONLY))
    for model in ("radial", "radial:balance", "radial:cost-first", "radial:performance-first"):
        assert parse_model(model, config).lam == 0.0


@pytest.mark.parametrize("layout", ["no cost column", "zero costs"])
def test_bench_reports_one_tradeoff_whatever_lambdas_are_asked(tmp_path, monkeypatch, layout):
    from radialrouter.evaluation.bench import run_bench, write_bench

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    data = _quality_only_file(tmp_path, layout)
    for lams in (None, ["balance", 0.02, 0.1]):
        doc = run_bench(data, ["best-single", "oracle"], [0], lams=lams, progress=False, measure_encoder=False)
        assert doc["meta"]["lams"] == [0.0] and doc["meta"]["presets"] == QUALITY_ONLY
        assert not doc["meta"]["has_cost"] and not doc["curves"]
        assert {r["lam"] for r in doc["results"]} == {0.0}
    md = write_bench(doc, tmp_path / "out", "q")[1].read_text()
    assert "quality only" in md and "BA" not in md and "λ = 0.02" not in md
