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


# ------------------------------------------------------------------------------------------ the figures, by hand
# q_strong = [1, 1, 0, 1, 0], q_weak = [0, 1, 1, 0, 0]: gains (strong − weak) [+1, 0, −1, +1, 0]. Margins
# [0.9, 0.1, −0.5, 0.3, 0.2] send q0, q3, q4, q1, q2 to the strong LLM in that order: gains +1, +1, 0, 0, −1.
# Always weak: 2/5 = 0.4, always strong: 3/5 = 0.6. The curve (share, quality): (0, 0.4), (0.2, 0.6), (0.4, 0.8),
# (0.6, 0.8), (0.8, 0.8), (1, 0.6); PGR = (quality − 0.4) / 0.2 = 0, 1, 2, 2, 2, 1.
_STRONG, _WEAK = np.array([1.0, 1, 0, 1, 0]), np.array([0.0, 1, 1, 0, 0])
_MARGIN = np.array([0.9, 0.1, -0.5, 0.3, 0.2])


def test_the_reported_curve_is_quality_and_pgr_at_eleven_call_shares():
    """The report's curve: quality and PGR at call shares 0, 0.1, …, 1 (interpolated between whole queries), next
    to always-weak and always-strong quality, APGR (area under PGR) and CPT (first share reaching the PGR)."""
    m = strong_weak_metrics(_MARGIN, _STRONG, _WEAK)
    assert (m["n"], m["left_out"]) == (5, 0)
    assert m["quality_weak"] == pytest.approx(0.4) and m["quality_strong"] == pytest.approx(0.6)
    # trapezoid over steps of 0.2: 0.2 · (0/2 + 1 + 2 + 2 + 2 + 1/2) = 1.5
    assert m["apgr"] == pytest.approx(1.5) and m["cpt50"] == pytest.approx(0.2) and m["cpt80"] == pytest.approx(0.2)
    assert [p["strong_share"] for p in m["curve"]] == pytest.approx([i / 10 for i in range(11)])
    assert [p["quality"] for p in m["curve"]] == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7, 0.6])
    assert [p["pgr"] for p in m["curve"]] == pytest.approx([0, 0.5, 1, 1.5, 2, 2, 2, 2, 2, 1.5, 1])
    assert set(m["curve"][0]) == {"strong_share", "quality", "pgr"}


def test_tied_queries_share_their_gain_wherever_the_tie_is():
    """A tie anywhere in the order (not only at the top) is spread evenly: the strong LLM gains +1 on one of two
    queries scored alike and −1 on the other, so sending either first is worth 0 in expectation."""
    share, quality = gain_curve(np.array([2.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    assert share.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert quality.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3])  # not 1/3 → 2/3 → 1/3


def test_right_or_wrong_may_be_given_as_booleans():
    """Correctness given as booleans (right / wrong), and integer margins, give the same curve as floats."""
    share, quality = gain_curve(np.array([3, 2, 1, 0]), np.array([True, False, True, True]),
                                np.array([False, False, True, False]))
    floats = gain_curve(np.array([3.0, 2, 1, 0]), np.array([1.0, 0, 1, 1]), np.array([0.0, 0, 1, 0]))
    assert share.tolist() == floats[0].tolist() and quality.tolist() == pytest.approx(floats[1].tolist())
    assert quality.tolist() == pytest.approx([0.25, 0.5, 0.5, 0.5, 0.75])


def test_a_single_query_and_no_query_at_all():
    """One query (a task with one query in a per-task report): the curve joins always-weak to always-strong. Every
    query left out: no figure, counts only."""
    m = strong_weak_metrics(np.array([0.3]), np.array([1.0]), np.array([0.0]))
    assert (m["quality_weak"], m["quality_strong"]) == (0.0, 1.0)
    assert m["apgr"] == 0.5 and m["cpt50"] == 1.0 and m["cpt80"] == 1.0  # one query: no order to exploit
    assert [p["quality"] for p in m["curve"]] == pytest.approx([i / 10 for i in range(11)])
    none = strong_weak_metrics(np.array([0.3, 0.1]), np.array([np.nan, 1.0]), np.array([0.0, np.nan]))
    assert (none["n"], none["left_out"], none["apgr"]) == (0, 2, None)


def test_router_margin_is_the_routers_own_preference_at_lambda_zero():
    """The margin is the router's preference for the strong LLM over the weak one at λ = 0, read the way the
    router reads a query: labels for the oracle (its margin is the true gain, whatever the prices), embeddings for
    an embedding router (1-NN on its own training queries recalls each query's own labels), each query's task for
    a router that reads context."""
    from radialrouter.data import make_synthetic
    from radialrouter.evaluation.strong_weak import router_margin
    from radialrouter.routers import make_router

    ds = make_synthetic(n_queries=60, n_llms=3, seed=3)
    strong, weak = ds.llms[2], ds.llms[0]
    gain = ds.quality[:, 2] - ds.quality[:, 0]
    assert router_margin(make_router("oracle").fit(ds), ds, strong, weak) == pytest.approx(gain)
    assert router_margin(make_router("oracle").fit(ds), ds, weak, strong) == pytest.approx(-gain)
    assert router_margin(make_router("knn", k=1).fit(ds), ds, strong, weak) == pytest.approx(gain)
    calibrated = make_router("oracle").fit(ds)
    calibrated.default_lam_ = 0.5  # a saved calibration moves the default λ: the margin stays the one at λ = 0
    assert router_margin(calibrated, ds, strong, weak) == pytest.approx(gain)

    class ByTask:
        """A stand-in for a context-reading router: prefers the strong LLM on task-0, the weak one elsewhere."""

        random_pick, uses_embeddings, uses_context = False, False, True

        def predict_scores(self, x, lam, context=None):
            prefer = np.array([1.0 if c == "task-0" else -1.0 for c in context]) if context is not None else 0
            return np.stack([np.zeros(len(x)), np.zeros(len(x)), np.zeros(len(x)) + prefer], axis=1)

    tasks = ds.tasks
    margin = router_margin(ByTask(), ds, strong, weak)
    assert margin.tolist() == [1.0 if t == "task-0" else -1.0 for t in tasks] and 0 < (margin > 0).sum() < len(ds)


def test_pair_report_names_the_pair_and_reports_each_task_apart():
    """`pair_report`: the pair's names, the pooled figures, and with several tasks the figures of each task on its
    own queries only (with one task there is nothing to split)."""
    from radialrouter.data import RoutingDataset
    from radialrouter.evaluation.strong_weak import PAIR_FIGURES, pair_report
    from radialrouter.routers import make_router

    # maths: the fixture above (strong right on q0, q1, q3); history: three queries, strong better on one
    quality = np.column_stack([np.r_[_WEAK, 0, 1, 0], np.r_[_STRONG, 1, 1, 0]])
    tasks = ["maths"] * 5 + ["history"] * 3
    data = RoutingDataset.from_arrays([f"q{i}" for i in range(8)], quality, ["small", "large"],
                                      cost=np.tile([0.001, 0.01], (8, 1)), tasks=tasks)
    oracle = make_router("oracle").fit(data)
    report = pair_report(oracle, data, "large", "small")
    assert (report["strong"], report["weak"]) == ("large", "small") and report["n"] == 8
    assert list(report["per_task"]) == ["maths", "history"]
    for task, rows in (("maths", slice(0, 5)), ("history", slice(5, 8))):
        alone = strong_weak_metrics(quality[rows, 1] - quality[rows, 0], quality[rows, 1], quality[rows, 0])
        assert report["per_task"][task] == {k: pytest.approx(alone[k]) for k in PAIR_FIGURES}
    assert report["per_task"]["history"]["n"] == 3 and report["per_task"]["history"]["quality_strong"] == 2 / 3
    one = data.subset(np.arange(5))
    assert "per_task" not in pair_report(make_router("oracle").fit(one), one, "large", "small")
