"""`radialrouter bench`: the JSON schema and Markdown report of a tiny run, λ-specific routers, quality-only data
with in/out-of-distribution averages, the task split options, and the collapse index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import wide_frame
from typer.testing import CliRunner

from radialrouter.cli import app
from radialrouter.data import load_splits
from radialrouter.evaluation import collapse_index
from radialrouter.evaluation.bench import default_routers, run_bench, write_bench
from radialrouter.routers import BUILTIN_ROUTERS, register
from radialrouter.routers import registry as routers
from radialrouter.routers.reference import BestSingleRouter

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))


def test_bench_cli_writes_json_and_markdown(tmp_path):
    wide_frame(n=60).to_parquet(tmp_path / "tiny.parquet")
    result = runner.invoke(app, ["bench", "--data", str(tmp_path / "tiny.parquet"), "--routers", "knn,best-single",
                                 "--seeds", "0", "--out", str(tmp_path / "out"), "--no-encoder-latency"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert doc["schema_version"] == 1
    meta = doc["meta"]
    for key in ("git_commit", "data_fingerprint", "data_sha256", "encoder", "seeds", "machine", "versions",
                "wall_seconds"):
        assert key in meta, key
    assert meta["seeds"] == [0] and meta["machine"]["cpu_count"] >= 1 and meta["encoder"]["dim"] == 384
    rows = doc["results"]
    assert {r["router"] for r in rows} == {"knn", "best-single"}
    # The named trade-offs on this data's price scale, resolved on the training split and recorded.
    assert {r["lam"] for r in rows} == set(meta["presets"].values()) and len(meta["presets"]) == 3
    assert {r["scenario"] for r in rows} == {"performance-first", "balance", "cost-first"}
    for r in rows:
        assert {"router", "lam", "perf", "cost", "score", "seed", "per_task", "most_expensive_share"} <= set(r)
        assert r["score"] == pytest.approx(r["perf"] - r["lam"] * r["cost"])
    assert {"sweeps", "curves", "collapse", "timing"} <= set(doc)
    assert set(doc["timing"]["knn"]) >= {"fit_seconds", "batch_ms_per_query", "single_ms"}
    assert {"aiq", "qnc"} <= set(doc["curves"]["knn"][0])
    md = (tmp_path / "out" / "tiny.md").read_text()
    for heading in ("Table 1", "AIQ", "RCI", "Per task", "latency", "Provenance"):
        assert heading in md, heading
    pytest.importorskip("matplotlib")
    assert (tmp_path / "out" / "tiny_collapse.png").stat().st_size > 1000


def test_bench_rejects_unknown_router(tmp_path):
    wide_frame(n=20).to_parquet(tmp_path / "d.parquet")
    result = runner.invoke(app, ["bench", "--data", str(tmp_path / "d.parquet"), "--routers", "nope"])
    assert result.exit_code != 0
    assert "unknown router 'nope'" in str(result.exception) + result.output


class _PerLam(BestSingleRouter):
    """A reference router pretending to be trained for one λ (to test the per-λ protocol)."""

    name = "test-per-lam"
    lam_at_fit = True

    def __init__(self, lam: float = 0.0) -> None:
        self.lam = lam


def test_lam_at_fit_routers_get_one_model_per_scenario(tmp_path, monkeypatch):
    monkeypatch.setattr(routers, "_REGISTERED", dict(routers._REGISTERED))  # registration undone after the test
    register(_PerLam)
    wide_frame(n=60).to_parquet(tmp_path / "d.parquet")
    doc = run_bench(str(tmp_path / "d.parquet"), ["test-per-lam", "oracle"], [0, 1], progress=False,
                    measure_encoder=False)
    assert len(doc["timing"]["test-per-lam"]["fit_seconds"]) == 2 * 3
    rows = [r for r in doc["results"] if r["router"] == "test-per-lam"]
    named = sorted(doc["meta"]["presets"].values())  # resolved once (seed 0's training split), kept for every seed
    assert sorted((r["seed"], r["lam"]) for r in rows) == [(s, lam) for s in (0, 1) for lam in named]
    # Its sweep holds the scenario points only; λ-free routers get the full sweep.
    assert {r["lam"] for r in doc["sweeps"]["test-per-lam"]} == set(named)
    assert len({r["lam"] for r in doc["sweeps"]["oracle"]}) > 3
    assert "test-per-lam" in default_routers()
    json_path, md_path = write_bench(doc, tmp_path / "out", "per-lam")
    assert "± " in md_path.read_text()  # two seeds: mean ± std


def test_quality_only_data_reports_id_and_ood_averages(tmp_path):
    df = wide_frame(n=80).drop(columns=[c for c in wide_frame(n=1).columns if c.endswith("|total_cost")])
    df["eval_name"] = np.where(np.arange(len(df)) % 3 == 0, "poetry", df["eval_name"])
    df.to_parquet(tmp_path / "q.parquet")
    doc = run_bench(str(tmp_path / "q.parquet"), ["task-best", "best-single", "oracle"], [0], progress=False,
                    train_tasks="maths,history", test_tasks="maths,history,poetry")
    assert doc["meta"]["lams"] == [0.0] and not doc["meta"]["has_cost"]
    assert not doc["sweeps"] and not doc["curves"]
    assert {r["lam"] for r in doc["results"]} == {0.0}
    _, md_path = write_bench(doc, tmp_path, "q")
    md = md_path.read_text()
    assert "ID avg" in md and "OOD avg" in md and "## Curves" not in md and ".png" not in md


def test_load_splits_in_and_out_of_distribution(tmp_path):
    df = wide_frame(n=90)
    df["eval_name"] = ["a", "b", "c"] * 30
    df["split"] = np.where(np.arange(90) % 5 == 0, "test", "train")  # 6 test rows per task
    df.to_parquet(tmp_path / "s.parquet")
    path = str(tmp_path / "s.parquet")
    _, train, _, test = load_splits(path, train_tasks="a,b", test_tasks="a,c", val_size=0)
    assert set(train.tasks) == {"a", "b"} and set(train.split) == {"train"}
    assert sorted(set(test.tasks)) == ["a", "c"]
    assert (test.tasks == "a").sum() == 6 and (test.tasks == "c").sum() == 30  # a: its test split; c: every row
    with pytest.raises(ValueError, match="unknown task"):
        load_splits(path, train_tasks="a,zzz", test_tasks="c")


def test_collapse_index():
    quality = np.array([[1, 1, 1], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=float)
    cost = np.array([[1, 2, 3]] * 4, dtype=float)
    to_top = np.zeros((4, 3))
    to_top[:, 2] = 1
    # Rows 0, 2 and 3 had a cheaper LLM as good as the most expensive one; row 1 did not.
    assert collapse_index(to_top, quality, cost) == pytest.approx(0.75)
    cheapest = np.zeros((4, 3))
    cheapest[:, 0] = 1
    assert collapse_index(cheapest, quality, cost) == 0.0


def test_default_routers_lists_learned_then_references():
    names = default_routers()
    assert names[-4:] == ["oracle", "random", "best-single", "task-best"]
    assert {"knn", "mlp", "mf", "hybrid", "frugal"} <= set(names)
    assert set(BUILTIN_ROUTERS) <= set(names)


def test_bench_reports_a_strong_weak_pair(tmp_path):
    wide_frame(n=60).to_parquet(tmp_path / "tiny.parquet")
    doc = run_bench(str(tmp_path / "tiny.parquet"), ["best-single", "oracle"], [0, 1], measure_encoder=False,
                    progress=False, pair=("large", "small"))
    assert doc["meta"]["pair"] == ["large", "small"] and set(doc["pairs"]) == {"best-single", "oracle"}
    assert [r["seed"] for r in doc["pairs"]["oracle"]] == [0, 1]
    best = [r["apgr"] for r in doc["pairs"]["best-single"] if r["apgr"] is not None]
    assert all(a == pytest.approx(0.5) for a in best)  # one score for every query: a random order
    _, md = write_bench(doc, tmp_path / "out", "tiny")
    assert "Strong/weak pair: `large` vs `small`" in md.read_text()
    result = runner.invoke(app, ["bench", "--data", str(tmp_path / "tiny.parquet"), "--routers", "oracle",
                                 "--pair", "large", "--out", str(tmp_path / "o2")])
    assert isinstance(result.exception, ValueError) and "STRONG,WEAK" in str(result.exception)


def test_named_lams_resolve_on_the_pool(tmp_path):
    wide_frame(n=60).to_parquet(tmp_path / "d.parquet")
    doc = run_bench(str(tmp_path / "d.parquet"), ["best-single"], [0], lams=["balance", 0.05], progress=False,
                    measure_encoder=False)
    assert doc["meta"]["lams"] == [doc["meta"]["presets"]["balance"], 0.05] and doc["meta"]["lams"][0] != 0.02
    bad = runner.invoke(app, ["bench", "--data", str(tmp_path / "d.parquet"), "--lam", "frugal-ish"])
    assert bad.exit_code != 0 and "λ must be a number" in str(bad.exception)


def test_context_rows_and_ensemble_reusing_its_members_fits(tmp_path, monkeypatch):
    """``NAME+context`` benches NAME fitted with each query's task as context, as its own row; an ensemble whose
    members have rows of their own stacks those fits (the same ones it would make) instead of fitting again."""
    from radialrouter.routers.ensemble import EnsembleRouter

    class SmallEnsemble(EnsembleRouter):
        name = "test-small-ensemble"

        def __init__(self, members=("knn", "mlp"), seed=0, context=False, encoder=None) -> None:
            super().__init__(members=members, seed=seed, context=context, encoder=encoder)

    monkeypatch.setattr(routers, "_REGISTERED", dict(routers._REGISTERED))  # registration undone after the test
    register(SmallEnsemble)
    fits = []
    real_fit = EnsembleRouter._make_member

    def counting(self, name):
        fits.append(name)
        return real_fit(self, name)

    monkeypatch.setattr(EnsembleRouter, "_make_member", counting)
    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    doc = run_bench(str(tmp_path / "d.parquet"), ["knn", "mlp", "test-small-ensemble", "test-small-ensemble+context"],
                    seeds=[0], progress=False, measure_encoder=False, latency_runs=1)
    assert {r["router"] for r in doc["results"]} == {"knn", "mlp", "test-small-ensemble",
                                                     "test-small-ensemble+context"}
    assert fits.count("mlp") == 2  # the checks of each ensemble's fit_on_members; no member fitted again
    with pytest.raises(ValueError, match="takes no context"):
        run_bench(str(tmp_path / "d.parquet"), ["knn+context"], seeds=[0], progress=False)


def test_auto_row_is_the_cross_validated_choice(tmp_path, monkeypatch):
    """``auto`` in a bench is what ``train --router auto`` would ship for each seed, with its choice recorded."""
    from radialrouter.evaluation import auto

    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    monkeypatch.setattr(auto, "AUTO_CANDIDATES", ("knn", "best-single"))
    doc = run_bench(str(tmp_path / "d.parquet"), ["auto", "knn"], seeds=[0], progress=False, measure_encoder=False,
                    latency_runs=1)
    assert {r["router"] for r in doc["results"]} == {"auto", "knn"}
    choice = doc["meta"]["auto"]["0"]
    assert choice["chosen"] in {"knn", "best-single"} and set(choice["cv"]) == {"knn", "best-single"}
    if choice["chosen"] == "knn":  # the same seed and fit as the knn row: the same figures
        assert [r["score"] for r in doc["results"] if r["router"] == "auto"] == [
            r["score"] for r in doc["results"] if r["router"] == "knn"]
