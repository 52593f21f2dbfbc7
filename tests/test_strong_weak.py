"""RouteLLM's strong/weak-pair metrics: hand-checked curve, the random/perfect/reversed bounds, ties, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from radialrouter.evaluation.strong_weak import gain_curve, strong_weak_metrics


def test_curve_by_hand():
    # gains (strong − weak): +1, 0, +1, −1; margins put them in the order q2, q0, q3, q1
    q_strong = np.array([1.0, 0.0, 1.0, 0.0])
    q_weak = np.array([0.0, 0.0, 0.0, 1.0])
    share, quality = gain_curve(np.array([0.5, -1.0, 0.9, 0.1]), q_strong, q_weak)
    np.testing.assert_allclose(share, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(quality, [0.25, 0.5, 0.75, 0.5, 0.5])
    m = strong_weak_metrics(np.array([0.5, -1.0, 0.9, 0.1]), q_strong, q_weak)
    # PGR = (quality − 0.25) / 0.25 = 0, 1, 2, 1, 1 → trapezoid over shares 0 … 1: 0.25 × 4.5 = 1.125
    assert m["apgr"] == pytest.approx(1.125) and m["cpt50"] == 0.25 and m["cpt80"] == 0.25


def test_bounds_random_perfect_reversed_and_ties():
    rng = np.random.default_rng(0)
    q_strong, q_weak = (rng.random(2000) < 0.7).astype(float), (rng.random(2000) < 0.5).astype(float)
    gain = q_strong - q_weak
    perfect, tied = strong_weak_metrics(gain, q_strong, q_weak), strong_weak_metrics(np.zeros(2000), q_strong, q_weak)
    reversed_ = strong_weak_metrics(-gain, q_strong, q_weak)
    assert tied["apgr"] == pytest.approx(0.5) and tied["cpt50"] == pytest.approx(0.5, abs=1e-3)
    assert perfect["apgr"] > 1 > 0.5 > reversed_["apgr"]
    assert perfect["cpt50"] <= perfect["cpt80"] < tied["cpt80"]
    noisy = strong_weak_metrics(gain + rng.normal(0, 2, 2000), q_strong, q_weak)
    assert tied["apgr"] < noisy["apgr"] < perfect["apgr"]


def test_no_gap_and_missing_cells():
    m = strong_weak_metrics(np.arange(4.0), np.array([1.0, 0, 1, np.nan]), np.array([1.0, 0, 1, 0]))
    assert m["apgr"] is None and m["cpt50"] is None and m["n"] == 3 and m["left_out"] == 1


def test_eval_cli_reports_the_pair(tmp_path, wide_df):
    from radialrouter.cli import app

    wide_df.to_parquet(tmp_path / "d.parquet")
    data = str(tmp_path / "d.parquet")
    result = CliRunner().invoke(app, ["eval", "--data", data, "--routers", "oracle,best-single", "--pair",
                                      "large,small", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "APGR" in result.output and "CPT(80%)" in result.output
    pairs = json.loads((tmp_path / "r.json").read_text())["meta"]["pairs"]
    # best-single prefers no query to another (every margin ties), so its expected gain curve is the straight line
    assert pairs["best-single"]["apgr"] == 0.5
    assert pairs["oracle"]["apgr"] > 0.5  # the oracle sends the strong LLM the queries where it wins first
    bad = CliRunner().invoke(app, ["eval", "--data", data, "--routers", "oracle", "--pair", "large,gpt-9"])
    assert isinstance(bad.exception, ValueError) and "--pair: 'gpt-9'" in str(bad.exception)  # → `error:`, exit 2


def test_unknown_pair_llm_fails_before_any_router_is_fitted(tmp_path, wide_df, monkeypatch):
    """`eval --pair` and `bench --pair` checked the names only after the whole evaluation (issue 25, item 8)."""
    import radialrouter.evaluation.bench as bench
    import radialrouter.routers as routers
    from radialrouter.cli import app

    wide_df.to_parquet(tmp_path / "d.parquet")
    data = str(tmp_path / "d.parquet")

    def no_router(*args, **kwargs):
        raise AssertionError("a router was made before --pair was checked")

    monkeypatch.setattr(routers, "make_router", no_router)
    bad = CliRunner().invoke(app, ["eval", "--data", data, "--routers", "oracle", "--pair", "large,gpt-9"])
    assert isinstance(bad.exception, ValueError), bad.output
    assert str(bad.exception) == "--pair: 'gpt-9' is not an LLM of this data set; its LLMs are small, medium, large"
    same = CliRunner().invoke(app, ["eval", "--data", data, "--routers", "oracle", "--pair", "large,large"])
    assert isinstance(same.exception, ValueError) and "two different LLMs" in str(same.exception)
    monkeypatch.setattr(bench, "_bench_router", no_router)
    with pytest.raises(ValueError, match=r"--pair: 'gpt-9' is not an LLM of this data set; its LLMs are small"):
        bench.run_bench(data, ["oracle"], [0], pair=("gpt-9", "small"), progress=False, measure_encoder=False)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_random_router_apgr_is_its_expectation(seed):
    from radialrouter.data import make_synthetic
    from radialrouter.evaluation.strong_weak import pair_report
    from radialrouter.routers import make_router

    ds = make_synthetic(n_queries=200, n_llms=3, seed=seed)
    q = np.nanmean(ds.quality, axis=0)
    strong, weak = ds.llms[int(np.argmax(q))], ds.llms[int(np.argmin(q))]
    report = pair_report(make_router("random", seed=seed).fit(ds), ds, strong, weak)
    assert report["apgr"] == 0.5  # a random order recovers the gap linearly: exactly, not one draw of it
    assert report["cpt50"] == 0.5 and report["cpt80"] == 0.8


def test_bench_reports_apgr_per_task(tmp_path, monkeypatch):
    from conftest import wide_frame

    from radialrouter.data import load_splits
    from radialrouter.evaluation.bench import run_bench, write_bench

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    wide_frame(n=200, seed=4).to_parquet(tmp_path / "two.parquet")  # tasks maths and history
    path = str(tmp_path / "two.parquet")
    doc = run_bench(path, ["oracle", "best-single"], [0, 1], measure_encoder=False, progress=False,
                    pair=("large", "small"))
    for seed, report in zip([0, 1], doc["pairs"]["oracle"]):
        _, _, _, test = load_splits(path, seed=seed)
        assert set(report["per_task"]) == {"maths", "history"}
        for task, figures in report["per_task"].items():
            rows = test.tasks == task
            strong, weak = (test.quality[rows, test.llms.index(llm)] for llm in ("large", "small"))
            expected = strong_weak_metrics(strong - weak, strong, weak)  # the oracle's margin is the true gain
            assert figures["apgr"] == pytest.approx(expected["apgr"]) and figures["n"] == int(rows.sum())
            assert figures["apgr"] != pytest.approx(report["apgr"])  # not the pooled figure
    assert all(f["apgr"] in (0.5, None) for r in doc["pairs"]["best-single"] for f in r["per_task"].values())
    json_path, md_path = write_bench(doc, tmp_path / "out", "two")
    assert json.loads(json_path.read_text())["pairs"]["oracle"][0]["per_task"]["maths"]["apgr"] is not None
    md = md_path.read_text()
    table = md.split("### APGR per task")[1].split("\n\n")[2].splitlines()
    assert set(table[0].strip("| ").split(" | ")) == {"Router", "maths", "history"}
    assert [line.split(" | ")[0] for line in table[2:]] == ["| oracle", "| best-single"]
