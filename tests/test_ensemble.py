"""The stacking ensemble (issue #23 items 1 and 3): members fitted on train (validation for their early stopping),
non-negative weights fitted on validation (missing cells masked), routing as q̂ − λ·cost, one saved directory, CLI
and registry; the optional per-query context (task, application) as one more stacked row."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from conftest import wide_frame
from typer.testing import CliRunner

from radialrouter.cli import app
from radialrouter.core.objective import COST_SCALE
from radialrouter.data import RoutingDataset, make_synthetic, with_validation
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import Router, RouterError, from_pretrained, make_router
from radialrouter.routers.base import MissingCellsWarning
from radialrouter.routers.ensemble import EnsembleRouter, EnsembleWeightsWarning, fit_quality_weights

pytestmark = pytest.mark.usefixtures("one_thread")

#: Cheap members: a few seconds for all four on a few hundred queries.
FAST = {"mlp": {"steps": 300}, "radial": {"steps": 300, "d_model": 32}, "equi": {"epochs": 20}}
runner = CliRunner()


@pytest.fixture(scope="module")
def splits():
    # 384-d like the default encoder (saved routers carry its encoder.json); noisy topics, so members differ.
    ds = with_validation(make_synthetic(n_queries=800, n_llms=4, seed=0, dim=384, noise=2.0), val_size=0.25)
    return ds.select("train"), ds.select("val"), ds.select("test")


@pytest.fixture(scope="module")
def ensemble(splits, one_thread):
    train, val, _ = splits
    return make_router("ensemble", member_params=FAST).fit(train, val)


def _mean_score(router: Router, test: RoutingDataset, lams: list[float]) -> float:
    return float(np.mean([r["score"] for r in evaluate_router(router, test, lams)]))


def test_registered_and_defaults():
    router = make_router("ensemble")
    assert isinstance(router, EnsembleRouter) and router.members == ["mlp", "knn", "radial", "equi"]


def test_weights_are_fitted_on_validation_and_not_trivial(ensemble, splits):
    train, val, _ = splits
    w = np.stack(list(ensemble.weights.values()))
    assert (w >= 0).all()
    assert (w[:, 0] > 1e-3).sum() >= 2, f"one member took all the weight: {ensemble.training_['quality_weights']}"
    assert ensemble.training_["weights_fitted_on"] == f"the validation split ({len(val)} queries)"
    assert ensemble.training_["equal_weights_fallback"] is None
    # Members are fitted as each would be alone: the training split, the validation split for model selection.
    for member in ensemble.members_:
        assert member.training_["n_train"] == len(train) and member.training_["n_val"] == len(val)
    assert set(ensemble.training_["val_score"]) == {"mlp", "knn", "radial", "equi", "ensemble"}


def test_test_score_between_worst_and_best_member(ensemble, splits):
    _, _, test = splits
    lams = list(ensemble.presets_.values())
    members = {name: _mean_score(m, test, lams) for name, m in zip(ensemble.members, ensemble.members_)}
    score = _mean_score(ensemble, test, lams)
    assert score >= min(members.values())
    assert score >= max(members.values()) - 0.02, (score, members)


def test_decision_is_argmax_of_combined_quality_minus_cost(ensemble, splits):
    _, _, test = splits
    x = test.embeddings
    quality = sum(ensemble.weights[n][None, :] * q for n, q in ensemble.predict_member_quality(x).items())
    lam = ensemble.presets_["balance"]
    expected = quality + ensemble.intercept_ - lam * COST_SCALE * ensemble.predict_costs(x)
    np.testing.assert_allclose(ensemble.predict_scores(x, "balance"), expected, rtol=1e-9, atol=1e-12)
    # candidates: a restricted pool is respected
    picks = ensemble.predict(x, 0.0, ["llm-0", "llm-1"])
    assert set(picks.tolist()) <= {0, 1}
    decision = ensemble.route(x[:3], "balance")[0]
    assert decision.llm == decision.ranking[0] and decision.expected_cost_usd > 0


def test_save_load_round_trip_is_one_directory_with_identical_decisions(ensemble, splits, tmp_path):
    _, _, test = splits
    path = ensemble.save_pretrained(tmp_path / "ens")
    config = json.loads((path / "config.json").read_text())
    assert config["router"] == "ensemble" and config["params"]["members"] == ensemble.members
    for sub in config["state"]["member_dirs"]:
        assert (path / sub / "config.json").exists() and (path / sub / "model.safetensors").exists()
    assert not list(path.rglob("*.pkl"))
    loaded = from_pretrained(path)
    assert isinstance(loaded, EnsembleRouter)
    assert all(m.encoder is loaded.encoder for m in loaded.members_)  # one encoder for all
    for lam in (0.0, "balance", "cost-first"):
        np.testing.assert_array_equal(loaded.predict(test, lam), ensemble.predict(test, lam))
        # a loaded radial member runs on ONNX Runtime when installed: float32 kernels differ in the last digits
        np.testing.assert_allclose(loaded.predict_scores(test, lam), ensemble.predict_scores(test, lam), rtol=1e-4,
                                   atol=1e-7)
    np.testing.assert_allclose(loaded.predict_costs(test), ensemble.predict_costs(test))
    # a damaged member is a clear error
    (path / config["state"]["member_dirs"][1] / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(RouterError, match="1-knn"):
        from_pretrained(path)


def test_missing_cells_are_masked_in_the_weight_fit():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 3))
    quality = truth.copy()
    quality[rng.random((200, 3)) < 0.3] = np.nan
    good = truth.copy()
    good[np.isnan(quality)] = 5.0  # wrong only where nothing was observed: masking makes it perfect
    noise = rng.random((200, 3))
    w = fit_quality_weights(np.stack([good, noise]), quality, per_llm=False)
    np.testing.assert_allclose(w[:, 0], [1.0, 0.0], atol=1e-9)
    w = fit_quality_weights(np.stack([good, noise]), quality, per_llm=True)
    np.testing.assert_allclose(w, [[1.0] * 3, [0.0] * 3], atol=1e-9)
    # A per-query offset changes nothing (the fit is within each query).
    shifted = good + rng.normal(size=(200, 1))
    np.testing.assert_allclose(fit_quality_weights(np.stack([shifted, noise]), quality, False)[:, 0], [1, 0],
                               atol=1e-9)
    # Queries with one observed LLM carry no within-query information: no fit.
    single = np.full((5, 3), np.nan)
    single[:, 0] = 1.0
    assert not fit_quality_weights(np.stack([good[:5], noise[:5]]), single, False).any()


def test_fits_on_data_with_missing_cells_and_routes_among_observed():
    ds = make_synthetic(n_queries=300, n_llms=4, seed=1, dim=384, noise=2.0)
    rng = np.random.default_rng(1)
    quality = ds.quality.copy()
    quality[rng.random(len(ds)) < 0.3, 3] = np.nan
    ds = with_validation(replace(ds, quality=quality), val_size=0.2, seed=1)
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    router = make_router("ensemble", members=["mlp", "knn"], member_params={"mlp": {"steps": 100}}, per_llm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingCellsWarning)  # mlp and knn mask; nothing trains on complete rows
        router.fit(train, val)
    assert router.training_["missing_cells"]["method"] == "masked"
    assert router.training_["n_val"] == len(val)  # validation rows with a missing cell are kept (masked)
    out = router.outcomes(test, 0.0)
    assert np.isfinite(out.perf).all() and (out.weights[~test.observed] == 0).all()


def test_without_validation_a_seeded_slice_of_train_is_held_out(splits):
    train, _, test = splits
    small = train.subset(np.arange(200))
    a = make_router("ensemble", members=["knn", "mlp"], member_params={"mlp": {"steps": 50}}, seed=3).fit(small)
    b = make_router("ensemble", members=["knn", "mlp"], member_params={"mlp": {"steps": 50}}, seed=3).fit(small)
    assert "held out" in a.training_["weights_fitted_on"]
    n_member = a.members_[0].training_["n_train"]
    assert 0 < n_member < len(small) and n_member == pytest.approx(0.8 * len(small), abs=10)
    np.testing.assert_allclose(a.quality_weights_, b.quality_weights_)
    np.testing.assert_array_equal(a.predict(test, "balance"), b.predict(test, "balance"))


def test_quality_only_pool_any_lambda_routes_the_same(splits):
    train, val, test = (replace(d, cost=np.zeros_like(d.cost)) for d in splits)
    router = make_router("ensemble", members=["knn", "mlp"], member_params={"mlp": {"steps": 100}}).fit(train, val)
    assert router.quality_only and not router.cost_weights_.any()
    np.testing.assert_array_equal(router.predict(test, 0.0), router.predict(test, 5.0))
    np.testing.assert_array_equal(router.predict(test, "cost-first"), router.predict(test, 0.0))


def test_equal_weights_when_validation_cannot_fit_them(splits):
    train, val, _ = splits
    quality = np.full_like(val.quality, np.nan)
    quality[:, 0] = val.quality[:, 0]  # one observed LLM per query: no within-query difference to fit
    with pytest.warns(EnsembleWeightsWarning, match="two observed LLMs"):
        router = make_router("ensemble", members=["knn", "mlp"], member_params={"mlp": {"steps": 50}}).fit(
            train.subset(np.arange(150)), replace(val, quality=quality))
    np.testing.assert_allclose(router.quality_weights_, 0.5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"members": []}, "at least one member"),
    ({"members": ["knn", "knn"]}, "unique"),
    ({"members": ["knn"], "member_params": {"mlp": {}}}, "not members"),
    ({"members": ["random"]}, "λ-free router"),
    ({"members": ["cosine"]}, "λ-free router"),
    ({"members": ["knn", "ensemble"]}, "cannot be a member"),
])
def test_bad_members_are_refused(splits, kwargs, match):
    train, val, _ = splits
    with pytest.raises(RouterError, match=match):
        make_router("ensemble", **kwargs).fit(train, val)


def test_cli_train_with_router_ensemble(tmp_path):
    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    out = tmp_path / "m"
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(out), "--router",
                                 "ensemble", "--steps", "30", "--threads", "1"])
    assert result.exit_code == 0, result.output
    training = json.loads((out / "training.json").read_text())
    assert set(training["quality_weights"]) == {"mlp", "knn", "radial", "equi"}
    assert json.loads((out / "members" / "0-mlp" / "config.json").read_text())["params"]["steps"] == 30
    routed = runner.invoke(app, ["route", "--model", str(out), "question number 3 about maths"])
    assert routed.exit_code == 0, routed.output


def test_server_loads_a_saved_ensemble_and_routes_by_content(tmp_path):
    """The gateway loads the ensemble directory like any router (`from_pretrained`) and routes through it."""
    pytest.importorskip("fastapi")
    import httpx

    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.serve import parse_config
    from radialrouter.serve.app import create_app
    from radialrouter.serve.testing import ServerThread, fake_backends

    hard = [f"Write a Python function that {t}" for t in ("sorts a list", "parses JSON", "merges two dicts",
                                                            "reverses a linked list", "computes primes")]
    easy = ["hi, how are you?", "good morning!", "thanks a lot", "hello there", "nice day today"]
    quality = [[0.0, 1.0]] * len(hard) + [[1.0, 1.0]] * len(easy)
    ds = RoutingDataset.from_arrays(hard + easy, quality, ["llm-0", "llm-1"], cost=[[1e-4, 1e-2]] * len(quality)
                                    ).embed(QueryEncoder(cache_dir=False), progress=False)
    router = make_router("ensemble", members=["knn", "mlp"], member_params={"knn": {"k": 3}, "mlp": {"steps": 200}})
    router.fit(ds, ds).save_pretrained(tmp_path / "ens")
    with fake_backends(("cheap", "strong")) as (_, base):
        common = {"api_key": "${RR_BACKEND_KEY}", "input_price": 1.0, "output_price": 2.0, "context_window": 100_000}
        llms = [{"name": "cheap", "base_url": f"{base}/cheap/v1", "router_llm": "llm-0", **common},
                {"name": "strong", "base_url": f"{base}/strong/v1", "router_llm": "llm-1", **common}]
        config = parse_config({"router": {"path": "ens"}, "llms": llms, "ledger": {"path": None}}, base_dir=tmp_path,
                              env={"RR_BACKEND_KEY": "sk-backend"})
        with ServerThread(create_app(config)) as thread, httpx.Client(base_url=thread.url, timeout=30) as client:
            picks = [client.post("/v1/route", json={"model": "radial", "prompt": p}).json()["llm"]
                     for p in ("Write a Python function that flattens nested lists", "hello, how is it going?")]
    assert picks == ["strong", "cheap"]


# ---------------------------------------------------------------------------------------------- context
@pytest.fixture(scope="module")
def with_context(splits, one_thread):
    train, val, _ = splits
    return make_router("ensemble", member_params=FAST, context=True).fit(train, val)


def test_context_is_one_more_stacked_row_that_helps_when_informative(with_context):
    """Embeddings that are pure noise, tasks that say which half of the topics a query is on: the context row gets
    the weight, and routing with each test query's task scores higher than the same ensemble without context."""
    assert with_context.uses_context and set(with_context.weights) == {"mlp", "knn", "radial", "equi", "context"}
    ds = with_validation(make_synthetic(n_queries=800, n_llms=4, seed=1, dim=32, noise=100.0), val_size=0.25)
    train, val, test = ds.select("train"), ds.select("val"), ds.select("test")
    cheap = {"mlp": {"steps": 200}}
    plain = make_router("ensemble", members=["mlp", "knn"], member_params=cheap).fit(train, val)
    aware = make_router("ensemble", members=["mlp", "knn"], member_params=cheap, context=True).fit(train, val)
    assert aware.weights["context"][0] > max(aware.weights["mlp"][0], aware.weights["knn"][0])
    lams = list(aware.presets_.values())
    assert _mean_score(aware, test, lams) > _mean_score(plain, test, lams) + 0.02


def test_context_comes_from_the_argument_or_the_datasets_tasks(with_context, splits):
    _, _, test = splits
    x, tasks = test.embeddings, test.tasks.tolist()
    np.testing.assert_array_equal(with_context.predict(test, "balance"),
                                  with_context.predict(x, "balance", context=tasks))
    # unknown or missing context: the pool's mean row for every query, whatever the label
    unknown = with_context.predict_scores(x, "balance", context=["never-seen"] * len(x))
    np.testing.assert_allclose(unknown, with_context.predict_scores(x, "balance"))
    np.testing.assert_allclose(unknown, with_context.predict_scores(x, "balance", context=[None] * len(x)))
    assert not np.allclose(unknown, with_context.predict_scores(x, "balance", context=tasks))
    one = with_context.route(x[:2], "balance", context="task-1")
    assert one[0].scores == pytest.approx(with_context.route(x[:1], "balance", context=["task-1"])[0].scores)
    with pytest.raises(RouterError, match="context: 2 values for 3 queries"):
        with_context.predict(x[:3], "balance", context=["task-0", "task-1"])
    with pytest.raises(RouterError, match="must be strings or None"):
        with_context.predict(x[:1], "balance", context=[3])


def test_context_round_trip(with_context, splits, tmp_path):
    _, _, test = splits
    loaded = from_pretrained(with_context.save_pretrained(tmp_path / "ctx"))
    assert loaded.uses_context and loaded.contexts_ == with_context.contexts_
    np.testing.assert_allclose(loaded.predict_scores(test, "balance"), with_context.predict_scores(test, "balance"),
                               rtol=1e-6)


def test_routers_without_context_ignore_it(ensemble, splits):
    _, _, test = splits
    x = test.embeddings
    np.testing.assert_array_equal(ensemble.predict_scores(x, "balance", context=["task-0"] * len(x)),
                                  ensemble.predict_scores(x, "balance"))
