"""RadialRouter's levers of issue #23 item 4: the target temperature τ on the pool's scale (``tau="auto"``, chosen by
validation Score) and temperature-scaled probabilities (fitted on validation; decisions unchanged; saved)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radialrouter.core.objective import TAU_FRACTIONS, tau_grid, utility_spread
from radialrouter.data import make_synthetic, with_validation
from radialrouter.routers import from_pretrained
from radialrouter.routers.radial import RadialRouter

FAST = {"d_model": 32, "n_heads": 2, "steps": 60, "eval_every": 20, "patience": None}


@pytest.fixture(scope="module")
def splits():
    ds = with_validation(make_synthetic(n_queries=600, dim=384, seed=3), val_size=0.25)
    return ds.select("train"), ds.select("val"), ds.select("test")


def test_spread_and_grid_follow_the_pool_scale():
    quality = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cost = np.zeros((3, 2))
    # Rows 1–2 deviate by ±0.5 from their mean, row 3 not at all: RMS over the six cells is sqrt(4 · 0.25 / 6).
    assert utility_spread(quality, cost, [0.0]) == pytest.approx(np.sqrt(1 / 6))
    assert tau_grid(quality, cost, [0.0]) == tuple(float(f"{f * np.sqrt(1 / 6):.3g}") for f in TAU_FRACTIONS)
    # Ten times the scale (scores 0/10), ten times the temperatures.
    assert utility_spread(10 * quality, cost, [0.0]) == pytest.approx(10 * np.sqrt(1 / 6))
    assert tau_grid(np.ones((3, 2)), cost, [0.0]) == (1.0,)  # nothing to tell apart: any τ gives a uniform target
    # Missing cells count for nothing.
    assert utility_spread(np.array([[1.0, 0.0, np.nan]]), np.zeros((1, 3)), [0.0]) == pytest.approx(0.5)


def test_tau_auto_keeps_the_best_validation_score(splits, tmp_path):
    train, val, test = splits
    router = RadialRouter(**FAST, tau="auto").fit(train, val)
    selection = router.training_["tau_selection"]
    trials = selection["trials"]
    grid = tau_grid(train.quality, train.cost, tuple(router.presets_.values()))
    assert [t["tau"] for t in trials] == list(grid)
    best = max(trials, key=lambda t: t["val_score"])
    assert router.target_tau() == best["tau"] == router.training_["tau"]
    assert router.training_["val_score"] == best["val_score"]
    # What auto keeps is exactly the router trained at that number.
    fixed = RadialRouter(**FAST, tau=best["tau"]).fit(train, val)
    np.testing.assert_allclose(router.predict_scores(test, 0.02), fixed.predict_scores(test, 0.02), atol=1e-6)
    # Saved: the config keeps "auto", the state the chosen number.
    router.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["params"]["tau"] == "auto" and config["state"]["tau"] == best["tau"]
    assert from_pretrained(tmp_path / "m").target_tau() == best["tau"]


def test_tau_auto_without_validation_and_bad_values(splits):
    train = splits[0]
    router = RadialRouter(**{**FAST, "steps": 5}, tau="auto").fit(train)
    grid = tau_grid(train.quality, train.cost, tuple(router.presets_.values()))
    assert router.target_tau() == grid[TAU_FRACTIONS.index(1.0)]
    assert "without validation" in router.training_["tau_selection"]["how"]
    assert RadialRouter(**{**FAST, "steps": 5}, tau=0.5).fit(train).target_tau() == 0.5
    for bad in ("hot", 0.0, -1.0):
        with pytest.raises(ValueError, match="tau must be"):
            RadialRouter(tau=bad).fit(train)
    with pytest.raises(ValueError, match="frozen encoder"):
        RadialRouter(tau="auto", encoder_mode="finetune").fit(train)


def _top_pick_ece(router, data, lam: float) -> float:
    """Expected calibration error of p(pick) (10 bins) against the pick's quality (0/1 here)."""
    proba = np.array([[d.probabilities.get(name, 0.0) for name in router.llms_] for d in router.route(data, lam)])
    pick = router.predict(data, lam)
    rows = np.arange(len(data))
    conf, correct = proba[rows, pick], data.quality[rows, pick]
    bins = np.minimum((conf * 10).astype(int), 9)
    return float(sum(abs(conf[bins == k].mean() - correct[bins == k].mean()) * (bins == k).mean()
                     for k in range(10) if (bins == k).any()))


def test_calibration_lowers_nll_and_ece_without_changing_decisions(splits, tmp_path):
    train, val, test = splits
    raw = RadialRouter(**FAST, calibrate=False).fit(train, val)
    assert raw.proba_temperature(0.0) == 1.0 and "probability_calibration" not in raw.training_
    router = RadialRouter(**FAST).fit(train, val)  # calibrate=True: T fitted on val after training
    report = router.training_["probability_calibration"]
    assert report["lams"] == sorted(router.presets_.values())
    for before, after in zip(report["nll_before"], report["nll_after"]):
        assert after <= before + 1e-9
    assert any(after < before - 1e-3 for before, after in zip(report["nll_before"], report["nll_after"]))
    for lam in report["lams"]:  # the uncalibrated p(pick) sits far below the pick's rate of correct answers
        assert router.proba_temperature(lam) < 1
        assert _top_pick_ece(router, test, lam) < _top_pick_ece(raw, test, lam)  # on held-out queries
    # Decisions, rankings and scores are the uncalibrated router's; only the probabilities move.
    for lam in (0.0, 0.01, 0.02, 0.1, 0.5):
        assert np.array_equal(router.predict(test, lam), raw.predict(test, lam))
        np.testing.assert_array_equal(router.predict_scores(test, lam), raw.predict_scores(test, lam))
    mine, theirs = router.route(test.embeddings[:20], 0.0), raw.route(test.embeddings[:20], 0.0)
    assert [d.ranking for d in mine] == [d.ranking for d in theirs]
    assert all(abs(sum(d.probabilities.values()) - 1) < 1e-9 for d in mine)
    assert np.mean([d.probabilities[d.llm] for d in mine]) > np.mean([d.probabilities[d.llm] for d in theirs])
    # Between the named trade-offs log T is interpolated in λ.
    lams, temps = report["lams"], report["temperatures"]
    middle = (lams[0] + lams[1]) / 2
    assert router.proba_temperature(middle) == pytest.approx(np.sqrt(temps[0] * temps[1]))
    # Candidates: the calibrated probabilities are over the candidates only.
    d = router.route(test.embeddings[:3], 0.0, candidates=router.llms_[:2])[0]
    assert set(d.probabilities) == set(router.llms_[:2]) and abs(sum(d.probabilities.values()) - 1) < 1e-9
    # Saved with the router and loaded back.
    router.save_pretrained(tmp_path / "m")
    state = json.loads((tmp_path / "m" / "config.json").read_text())["state"]
    assert state["proba_temperature"]["temperatures"] == temps
    loaded = from_pretrained(tmp_path / "m")
    for lam in (0.0, 0.02):
        a, b = loaded.route(test.embeddings[:10], lam), router.route(test.embeddings[:10], lam)
        assert [x.llm for x in a] == [x.llm for x in b]
        for x, y in zip(a, b):
            assert x.probabilities == pytest.approx(y.probabilities, abs=1e-6)


def test_calibrate_probabilities_on_other_data_and_per_scenario(splits):
    train, val, test = splits
    router = RadialRouter(**FAST, lam_conditioned=False, lam=0.02, calibrate=False).fit(train, val)
    report = router.calibrate_probabilities(test)
    assert report["lams"] == [0.02] and len(report["temperatures"]) == 1
    assert router.proba_temperature(0.0) == router.proba_temperature(5.0) == report["temperatures"][0]
    best = router.calibrate_probabilities(test, labels="best")  # p_i: the chance that LLM i is a best choice
    assert best["labels"] == "best" and best["nll_after"][0] <= best["nll_before"][0] + 1e-9
    with pytest.raises(ValueError, match="labels"):
        router.calibrate_probabilities(test, labels="correct")
    router.fit(train, val)  # a refit drops the earlier calibration (calibrate=False here)
    assert router.proba_temperature(0.02) == 1.0


def test_train_command_takes_tau(tmp_path):
    from conftest import wide_frame
    from typer.testing import CliRunner

    from radialrouter.cli import app

    wide_frame(n=120).to_parquet(tmp_path / "d.parquet")
    base = ["train", "--router", "radial", "--data", str(tmp_path / "d.parquet"), "--steps", "20"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--tau", "auto"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    training = json.loads((tmp_path / "a" / "training.json").read_text())
    assert config["params"]["tau"] == "auto" and config["state"]["tau"] == training["tau"]
    assert f"τ = {training['tau']:g}, the best validation Score" in result.output
    assert len(training["tau_selection"]["trials"]) == len(TAU_FRACTIONS)
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--tau", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["params"]["tau"] == 0.5
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "c"), "--tau", "hot"])
    assert bad.exit_code != 0 and "--tau takes a number" in str(bad.exception)
    knn = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "d"),
                                   "--router", "knn", "--tau", "1"])
    assert knn.exit_code != 0 and "does not take --tau" in str(knn.exception)
