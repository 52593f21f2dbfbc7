"""Routing data with missing quality cells (an LLM without a result on some queries, as in real logs): every router
trains on it (with the mask, or on the complete rows with a warning), evaluation routes each query among its
observed LLMs, and no NaN reaches a reported metric."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from conftest import LLMS, wide_frame
from typer.testing import CliRunner

from radialrouter.core.objective import target_distribution
from radialrouter.data import make_synthetic
from radialrouter.data.splits import with_validation
from radialrouter.evaluation import best_single_reference, evaluate_router, single_llm_summary, summarize
from radialrouter.evaluation.budget_sweep import budget_sweep
from radialrouter.evaluation.strong_weak import pair_report
from radialrouter.routers import Outcomes, RouterError, available_routers, make_router
from radialrouter.routers.base import MissingCellsWarning, observed_candidates

pytestmark = pytest.mark.usefixtures("one_thread")

#: Small settings so every router trains in about a second.
SMALL = {"mlp": {"steps": 40}, "mf": {"steps": 40}, "cosine": {"steps": 40}, "routerdc": {"steps": 40},
         "equi": {"epochs": 2}, "radial": {"steps": 40, "d_model": 16, "n_clusters": 2},
         "ensemble": {"members": ["mlp", "knn", "radial"],
                      "member_params": {"mlp": {"steps": 40}, "radial": {"steps": 40, "d_model": 16, "n_clusters": 2}}}}
#: Routers that train with the mask; the others train on the complete rows with a `MissingCellsWarning`.
MASKED = {"oracle", "random", "best-single", "task-best", "knn", "mlp", "mf", "ridge", "cosine", "hybrid", "radial",
          "ensemble"}


def _with_missing(seed: int = 0, n: int = 300):
    """Synthetic data (4 LLMs, the priciest strong everywhere) where the priciest LLM misses 30 % of its cells and
    another 5 %; split into train / val / test."""
    ds = make_synthetic(n_queries=n, n_llms=4, seed=seed)
    rng = np.random.default_rng(seed + 1)
    quality = ds.quality.copy()
    quality[rng.random(n) < 0.3, 3] = np.nan
    quality[rng.random(n) < 0.05, 1] = np.nan
    ds = with_validation(replace(ds, quality=quality), val_size=0.1, seed=seed)
    return ds, ds.select("train"), ds.select("val"), ds.select("test")


@pytest.fixture(scope="module")
def data():
    return _with_missing()


@pytest.mark.parametrize("name", available_routers())
def test_every_router_trains_and_never_picks_an_unobserved_llm(data, name):
    _, train, val, test = data
    assert train.has_missing and test.has_missing and val.has_missing
    router = make_router(name, **SMALL.get(name, {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        router.fit(train, val)
    warned = [w for w in caught if issubclass(w.category, MissingCellsWarning)]
    how = router.training_["missing_cells"]
    if name in MASKED:
        assert not warned and how["method"] == "masked"
    else:  # trained on the complete rows, and says so
        assert len(warned) == 1 and "complete training rows" in str(warned[0].message)
        assert how == {"method": "complete rows", "rows": int(train.complete_rows.sum()),
                       "left_out_rows": int((~train.complete_rows).sum()),
                       "missing_cells": int((~train.observed).sum())}
        assert router.training_["n_train"] == int(train.complete_rows.sum())
    for lam in (0.0, 0.5, 2.0):
        out = router.outcomes(test, lam)
        assert np.isfinite(out.perf).all() and np.isfinite(out.cost).all()
        assert (out.weights[~test.observed] == 0).all(), "an unobserved LLM was chosen"
    rows = evaluate_router(router, test, [0.0, 0.5])
    for r in rows:
        figures = [r["perf"], r["cost"], r["score"], r["most_expensive_share"], r["overspend_share"],
                   *r["call_share"].values(), *(v for m in r["per_task"].values() for v in m.values())]
        assert np.isfinite(figures).all()
    # route(candidates=mask) is honoured: the decision is always one of the query's observed LLMs.
    queries = test if not router.uses_embeddings else test.embeddings
    picks = router.predict(queries, 0.0, test.observed)
    assert test.observed[np.arange(len(test)), picks].all()
    if name != "oracle":
        decisions = router.route(queries[:5] if router.uses_embeddings else test.subset(np.arange(5)), 0.0,
                                 test.observed[:5])
        for i, d in enumerate(decisions):
            allowed = {test.llms[j] for j in np.flatnonzero(test.observed[i])}
            assert d.llm in allowed and set(d.ranking) <= allowed


def test_budget_sweep_and_curves_are_finite(data):
    _, train, val, test = data
    for name in ("mlp", "equi", "frugal"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingCellsWarning)
            router = make_router(name, **SMALL.get(name, {})).fit(train, val)
        rows = budget_sweep(router, test, n=5)
        assert rows and all(np.isfinite([r["perf"], r["cost"], r["overspend_share"]]).all() for r in rows)
    ref = best_single_reference(test)
    assert np.isfinite([ref["perf"], ref["cost"]]).all()


def test_references_are_nan_aware():
    quality = np.array([[1.0, np.nan, 0.0], [0.0, 1.0, np.nan], [np.nan, 1.0, 1.0], [1.0, 1.0, 1.0]])
    cost = np.tile([0.001, 0.002, 0.003], (4, 1))
    from radialrouter.data import RoutingDataset

    ds = RoutingDataset.from_arrays([f"q{i}" for i in range(4)], quality, LLMS, cost=cost, tasks=["a", "a", "b", "b"])
    best = make_router("best-single").fit(ds)
    np.testing.assert_allclose(best.mean_quality_, [2 / 3, 1.0, 2 / 3])  # means over the observed rows
    task = make_router("task-best").fit(ds)
    np.testing.assert_allclose(task.task_quality_, [[0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])
    oracle = make_router("oracle").fit(ds)
    assert oracle.predict(ds, 0.0).tolist() == [0, 1, 1, 0]  # the best observed LLM, cheapest on ties
    random = make_router("random").fit(ds).outcomes(ds, 0.0)
    np.testing.assert_allclose(random.perf, [0.5, 0.5, 1.0, 1.0])  # the expectation over the observed LLMs
    np.testing.assert_allclose(random.weights.sum(axis=1), 1.0)
    assert (random.weights[~ds.observed] == 0).all()
    single = single_llm_summary(ds, 2)["macro"]  # LLM 'large' over its 3 observed queries
    assert single.perf == pytest.approx((0.0 + 1.0) / 2)  # task a: [0.0]; task b: [1, 1]
    # The radial KL target: a softmax over each query's observed LLMs only.
    target = target_distribution(quality, cost, 0.0, 1.0)
    assert (target[~np.isfinite(quality)] == 0).all()
    np.testing.assert_allclose(target.sum(axis=1), 1.0)


def test_no_nan_reaches_a_metric(data):
    _, _, _, test = data
    with pytest.raises(ValueError, match="missing \\(NaN\\)"):
        summarize(test.quality[:, 3], test.cost[:, 3], test.tasks, 0.0)
    unobserved = np.flatnonzero(~test.observed[:, 3])[0]
    choice = np.full(len(test), 3)
    with pytest.raises(RouterError, match=rf"query {unobserved + 1} \(.*\) was routed to 'llm-3', whose quality on "
                                          "it is missing") as err:
        Outcomes.of_choices(test, choice)
    assert "\n" not in str(err.value)
    assert observed_candidates(test.subset(test.complete_rows)) is None


def test_frugal_cascade_skips_unobserved_stages(data):
    _, train, val, test = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingCellsWarning)
        frugal = make_router("frugal").fit(train, val)
    cascade = frugal.cascade_.tolist()
    assert 3 in cascade  # the priciest (and strongest) LLM is the last stage
    out = frugal.outcomes(test, 0.0)
    lacking = ~test.observed[:, 3]
    # A query without the last stage's result stops at its last observed stage and pays only the stages it called.
    assert (out.weights[lacking, 3] == 0).all()
    present = test.observed[:, frugal.cascade_]
    stage_cost = np.where(present, test.cost[:, frugal.cascade_], 0.0).sum(axis=1)
    assert (out.cost <= stage_cost + 1e-12).all()


def test_radial_kl_trains_masked_and_quality_objective_too(data):
    _, train, val, test = data
    chance = evaluate_router(make_router("random", seed=0).fit(train), test, [0.0])[0]["perf"]
    for objective in ("kl", "quality"):
        router = make_router("radial", objective=objective, **SMALL["radial"]).fit(train, val)
        assert router.training_["missing_cells"]["method"] == "masked"
        perf = evaluate_router(router, test, [0.0])[0]["perf"]
        assert perf > chance + 0.1, (objective, perf, chance)  # it learned around the gaps, not just ran
    # Partially labelled traffic (one label per query) is still refused by the KL objective, by name.
    traffic = replace(train, quality=np.where(np.eye(4, dtype=bool)[np.arange(len(train)) % 4], train.quality, np.nan))
    with pytest.raises(RouterError, match="no training query has the quality of two LLMs"):
        make_router("radial", **SMALL["radial"]).fit(traffic)


def test_strong_weak_pair_leaves_out_and_counts_queries_without_both(data):
    _, train, val, test = data
    router = make_router("mlp", **SMALL["mlp"]).fit(train, val)
    report = pair_report(router, test, "llm-3", "llm-0")
    lacking = int((~test.observed[:, [0, 3]].all(axis=1)).sum())
    assert report["left_out"] == lacking > 0 and report["n"] == len(test) - lacking
    # llm-3 (the priciest) is the stronger of the pair on the queries that have both, so APGR is a number in [0, 1]
    assert report["quality_strong"] > report["quality_weak"] and 0.0 <= report["apgr"] <= 1.0


def test_bench_keeps_rows_with_missing_cells(tmp_path, monkeypatch):
    from radialrouter.evaluation.bench import run_bench, write_bench

    monkeypatch.setenv("RADIALROUTER_CACHE", str(tmp_path / "cache"))
    df = wide_frame(n=80)
    df.loc[df.index % 5 == 0, "large"] = np.nan  # the priciest LLM misses a fifth of the queries
    df.loc[3, "medium"] = np.nan
    df.to_parquet(tmp_path / "gaps.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingCellsWarning)
        doc = run_bench(str(tmp_path / "gaps.parquet"), ["oracle", "random", "best-single", "task-best", "hybrid",
                                                          "frugal"], [0], progress=False, measure_encoder=False,
                        latency_runs=1, pair=("large", "small"))
    meta = doc["meta"]
    assert meta["missing"]["mode"] == "keep" and meta["missing"]["rows_with_missing"] == 17
    assert meta["missing_cells"]["frugal"] == "complete rows" and meta["missing_cells"]["hybrid"] == "masked"
    assert meta["n_train"] + meta["n_val"] + meta["n_test"] == 80
    text = json.dumps(doc)
    assert "NaN" not in text and "Infinity" not in text
    assert all(r["left_out"] > 0 for reports in doc["pairs"].values() for r in reports)
    _, md = write_bench(doc, tmp_path / "out", "gaps")
    assert "Missing quality cells: 17 queries" in md.read_text()
    # The old exclusion path, through the CLI's --missing.
    from radialrouter.cli import app
    from radialrouter.data.loaders import DataWarning

    with pytest.warns(DataWarning, match="excluded 17 row"):
        result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "gaps.parquet"), "--routers",
                                          "oracle,best-single", "--missing", "exclude", "--json",
                                          str(tmp_path / "ex.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ex.json").read_text())["meta"]["n_test"] < meta["n_test"]


def test_pool_add_trains_on_complete_probes_with_a_warning(data):
    from radialrouter.policy.pool import add_llm

    full, train, val, test = data
    old = [llm for llm in full.llms if llm != "llm-2"]
    router = make_router("radial", **SMALL["radial"]).fit(train.select_llms(old).subset(
        train.select_llms(old).complete_rows))
    probes = test.select_llms([*old, "llm-2"])
    with pytest.warns(MissingCellsWarning, match=r"probes miss some LLM's quality; trained on the \d+ complete"):
        add_llm(router, "llm-2", probes, steps=5)
    assert "llm-2" in router.llms_
    assert np.isfinite(router.predict_scores(test.embeddings, 0.0)).all()


@pytest.mark.parametrize("name", ["mlp", "mf"])
def test_a_missing_cell_adds_nothing_to_the_loss(name, monkeypatch):
    """Routers that "train with the mask": the loss they minimise has zero gradient on an unknown quality cell (it is
    not read as a 0), and a non-zero one on every known cell."""
    import torch

    from radialrouter.core import training

    train = make_synthetic(n_queries=60, n_llms=3, seed=0)
    quality = train.quality.copy()
    quality[::3, 1] = np.nan
    quality[1::4, 2] = np.nan
    train = replace(train, quality=quality)
    seen = {}
    real = training.train_module

    def spy(module, loss_fn, n_train, **kwargs):
        seen["module"], seen["loss_fn"] = module, loss_fn
        return real(module, loss_fn, n_train, **kwargs)

    monkeypatch.setattr(training, "train_module", spy)
    make_router(name, steps=5).fit(train)
    module, outputs = seen["module"], []

    def keep(_module, _inputs, out):
        out.retain_grad()
        outputs.append(out)

    module.register_forward_hook(keep)
    module.train()
    seen["loss_fn"](np.arange(len(train))).backward()
    grad = outputs[-1].grad.detach().numpy()
    grad = grad.reshape(-1, *quality.shape)  # an ensemble stacks its members' logits first
    known = np.isfinite(quality)
    assert isinstance(outputs[-1], torch.Tensor) and (~known).sum() > 20
    assert np.all(grad[:, ~known] == 0.0)
    assert np.all(grad[:, known] != 0.0)


@pytest.mark.parametrize("name", ["mlp", "mf"])
def test_the_masked_loss_is_the_mean_over_known_cells_only(name, monkeypatch):
    """The loss on partial labels is the mean binary cross-entropy over the batch's known cells (not over all
    cells, unknown ones read as 0); a batch with one known cell is that cell's loss, one with none adds zero (no
    NaN); with every cell known it is the plain mean."""
    import torch

    from radialrouter.core import training

    train = make_synthetic(n_queries=30, n_llms=3, seed=2)
    quality = np.clip(train.quality.copy(), 0.05, 0.95)  # soft labels in (0, 1): a loss of 0 cannot hide
    quality[::2, 0] = np.nan
    quality[1::3, 2] = np.nan
    quality[5, :] = [np.nan, 0.7, np.nan]  # one known cell
    quality[7, :] = np.nan  # none known
    seen = {}
    real = training.train_module

    def spy(module, loss_fn, n_train, **kwargs):
        seen.setdefault("loss_fn", []).append(loss_fn)
        seen.setdefault("module", []).append(module)
        return real(module, loss_fn, n_train, **kwargs)

    monkeypatch.setattr(training, "train_module", spy)
    make_router(name, steps=3).fit(replace(train, quality=quality))
    make_router(name, steps=3).fit(replace(train, quality=np.clip(train.quality, 0.05, 0.95)))
    (masked, full), (module, full_module) = seen["loss_fn"], seen["module"]
    x = torch.from_numpy(np.asarray(train.embeddings, dtype=np.float32))
    known = np.isfinite(quality)

    def cell_losses(mod, rows):
        mod.eval()  # no dropout: the loss is a function of the weights alone
        with torch.no_grad():
            out = mod(x[rows]).numpy().astype(np.float64)
        y = np.nan_to_num(quality[rows])
        return np.logaddexp(0, out) - y * out  # binary cross-entropy with logits, per cell

    for rows in (np.arange(30), np.array([0, 3, 4, 6, 9])):
        module.eval()
        with torch.no_grad():
            got = float(masked(rows))
        assert got == pytest.approx(cell_losses(module, rows)[known[rows]].mean(), rel=1e-5)
    with torch.no_grad():
        assert float(masked(np.array([5]))) == pytest.approx(cell_losses(module, np.array([5]))[0, 1], rel=1e-5)
        assert float(masked(np.array([7]))) == 0.0
        full_module.eval()
        y = np.clip(train.quality, 0.05, 0.95)
        out = full_module(x).numpy().astype(np.float64)
        assert float(full(np.arange(30))) == pytest.approx((np.logaddexp(0, out) - y * out).mean(), rel=1e-5)


def test_pessimism_lowers_each_estimate_by_its_standard_error_from_its_label_count(tmp_path):
    """Routing on partial labels lowers each LLM's predicted quality by ``pessimism`` standard errors,
    sqrt(q̂(1 − q̂) / n) with n that LLM's number of labels — also for an LLM with a single label — and a saved
    router keeps the counts."""
    from radialrouter.routers import from_pretrained

    train = make_synthetic(n_queries=40, n_llms=3, seed=3)
    quality = train.quality.copy()
    quality[1:, 0] = np.nan  # one label for llm-0
    quality[::2, 1] = np.nan  # 20 for llm-1, 40 for llm-2
    router = make_router("mlp", steps=20).fit(replace(train, quality=quality))
    counts = np.isfinite(quality).sum(0)
    x = np.asarray(train.embeddings)
    router.pessimism = 0.0
    q = router.predict_scores(x, 0.0)  # at λ = 0 the score is the predicted quality
    for p in (1.0, 2.5):
        router.pessimism = p
        np.testing.assert_allclose(router.predict_scores(x, 0.0), q - p * np.sqrt(q * (1 - q) / counts), atol=1e-9)
    router.pessimism = 1.0
    router.save_pretrained(tmp_path / "mlp")
    loaded = from_pretrained(tmp_path / "mlp")
    np.testing.assert_allclose(loaded.predict_scores(x, 0.0), router.predict_scores(x, 0.0), atol=1e-6)
