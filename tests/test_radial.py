"""RadialRouter: RadialFormer shapes and masking for every backbone, training, persistence across processes,
λ conditioning, encoder fine-tuning, and the embedded default router."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROUTERBENCH3, needs_shared
from typer.testing import CliRunner

from radialrouter.core.encoders import EncoderError, QueryEncoder
from radialrouter.core.objective import SCENARIOS, target_distribution
from radialrouter.data import make_synthetic, with_validation
from radialrouter.evaluation import evaluate_router
from radialrouter.routers import make_router
from radialrouter.routers.radial import DEFAULT_DIR, RadialRouter, load_default, query_contrastive_loss
from radialrouter.routers.radialformer import BACKBONES, RadialFormer

FAST = {"d_model": 32, "n_heads": 2, "steps": 100, "eval_every": 25, "patience": None}


@pytest.fixture(scope="module")
def splits():
    # 384-d like the default encoder, so saved routers carry a consistent encoder.json.
    ds = with_validation(make_synthetic(n_queries=500, dim=384, seed=1), val_size=0.15)
    return ds.select("train"), ds.select("val"), ds.select("test")


@pytest.fixture(scope="module")
def conditioned(splits):
    train, val, _ = splits
    return RadialRouter(**{**FAST, "steps": 200}).fit(train, val)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("n_llms", [1, 3, 7])
def test_forward_shapes_and_mask_any_pool_size(backbone, n_llms):
    torch.manual_seed(0)
    net = RadialFormer(16, n_llms, d_model=32, n_layers=2, n_heads=4, backbone=backbone).eval()
    q, lam, cost = torch.randn(5, 16), torch.full((5,), 0.02), torch.rand(n_llms)
    assert net(q, lam, cost).shape == (5, n_llms)
    mask = torch.ones(5, n_llms, dtype=torch.bool)
    mask[:, 0] = n_llms == 1  # hide LLM 0 whenever another remains
    out = net(q, lam, cost, mask)
    assert torch.isfinite(out[mask]).all() and torch.isinf(out[~mask]).all()


@pytest.mark.parametrize("backbone", ["radial", "transformer", "mlp"])
def test_masked_llms_are_invisible(backbone):
    """Masking an LLM gives the same logits as removing it: the relay never sees masked satellites."""
    torch.manual_seed(0)
    net = RadialFormer(16, 5, d_model=32, n_heads=4, backbone=backbone).eval()
    q, lam, cost = torch.randn(4, 16), torch.full((4,), 0.1), torch.rand(5)
    keep = torch.tensor([True, False, True, True, False])
    masked = net(q, lam, cost, keep.expand(4, 5))[:, keep]
    net.llm = torch.nn.Parameter(net.llm.detach()[keep])
    assert torch.allclose(masked, net(q, lam, cost[keep]), atol=1e-5)


def test_route_with_candidates(conditioned, splits):
    test = splits[2]
    decisions = conditioned.route(test.embeddings[:10], lam="balance", candidates=["llm-1", "llm-3"])
    for d in decisions:
        assert d.llm in {"llm-1", "llm-3"} and set(d.ranking) == {"llm-1", "llm-3"}
        assert abs(sum(d.probabilities.values()) - 1) < 1e-9
    scores = conditioned.predict_scores(test.embeddings[:10], 0.02, candidates=["llm-1", "llm-3"])
    assert np.isinf(scores[:, [0, 2]]).all()


def test_training_reduces_the_kl(splits):
    train = splits[0]
    x = torch.from_numpy(train.embeddings)
    target = torch.from_numpy(target_distribution(train.quality, train.cost, 0.02, 0.1).astype(np.float32))

    def kl(router):
        with torch.no_grad():
            logp = torch.log_softmax(router.logits(x), -1)
        return float((target * (torch.log(target.clamp_min(1e-12)) - logp)).sum(-1).mean())

    before = RadialRouter(**{**FAST, "steps": 1}, tau=0.1, lam_conditioned=False).fit(train)
    after = RadialRouter(**FAST, tau=0.1, lam_conditioned=False).fit(train)
    assert kl(after) < 0.8 * kl(before)


def test_query_contrastive_loss_prefers_clustered_vectors():
    cluster = torch.arange(32) % 4
    centres = torch.randn(4, 8) * 5
    tight = centres[cluster] + 0.01 * torch.randn(32, 8)
    loose = torch.randn(32, 8)
    gen = torch.Generator().manual_seed(0)
    assert query_contrastive_loss(tight, cluster, 3, 0.1, gen) < query_contrastive_loss(loose, cluster, 3, 0.1, gen)


@pytest.mark.parametrize("lam_conditioned", [True, False])
def test_beats_random_in_every_scenario(splits, conditioned, lam_conditioned):
    train, val, test = splits
    for lam in SCENARIOS.values():
        router = conditioned if lam_conditioned else RadialRouter(**FAST, lam=lam, lam_conditioned=False).fit(
            train, val)
        mine = evaluate_router(router, test, [lam])[0]["score"]
        rand = evaluate_router(make_router("random").fit(train), test, [lam])[0]["score"]
        assert mine > rand + 0.05, (lam, mine, rand)


def test_conditioned_model_gets_cheaper_as_lam_grows(conditioned, splits):
    test = splits[2]
    spend = [conditioned.mean_cost_[conditioned.predict(test, lam)].mean() for lam in (0.0, 0.1, 1.0, 5.0)]
    assert all(a >= b - 1e-12 for a, b in zip(spend, spend[1:])), spend
    assert spend[-1] < spend[0]


def test_seeded_runs_are_identical(splits):
    train, val, test = splits
    a = RadialRouter(**{**FAST, "steps": 50}).fit(train, val)
    b = RadialRouter(**{**FAST, "steps": 50}).fit(train, val)
    assert np.array_equal(a.predict_scores(test, 0.02), b.predict_scores(test, 0.02))


def test_save_then_load_in_another_process(conditioned, splits, tmp_path):
    test = splits[2]
    conditioned.save_pretrained(tmp_path / "m")
    np.save(tmp_path / "x.npy", test.embeddings)
    code = (
        "import json, sys, numpy as np\n"
        "from radialrouter.routers import from_pretrained\n"
        f"r = from_pretrained({str(tmp_path / 'm')!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "out = {str(lam): r.predict(x, lam).tolist() for lam in (0.0, 0.02, 0.1)}\n"
        "print(json.dumps({**out, 'costs': r.predict_costs(x).tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    for lam in (0.0, 0.02, 0.1):
        assert theirs[str(lam)] == conditioned.predict(test.embeddings, lam).tolist()
    np.testing.assert_allclose(theirs["costs"], conditioned.predict_costs(test.embeddings), rtol=1e-12)
    training = json.loads((tmp_path / "m" / "training.json").read_text())
    assert {"data_fingerprint", "seed", "val_score", "best_step"} <= set(training)


def test_encoder_mismatch_on_load_fails_clearly(conditioned, tmp_path):
    conditioned.save_pretrained(tmp_path / "m")
    with pytest.raises(EncoderError, match="max_tokens"):
        RadialRouter.from_pretrained(tmp_path / "m", encoder=QueryEncoder(max_tokens=64))


def test_pool_hooks_resize_only_the_embedding(conditioned, splits):
    from radialrouter.policy.pool import clone

    test = splits[2]
    router = clone(conditioned)
    before = router.predict_scores(test.embeddings[:20], 0.02)
    costs = router.predict_costs(test.embeddings[:20])
    router.add_llm("newcomer", 1e-3, np.zeros(router.d_model, dtype=np.float32))
    assert router.llm_embedding().shape[0] == 5 and router.llms_[-1] == "newcomer"
    np.testing.assert_allclose(router.predict_costs(test.embeddings[:20])[:, -1], 1e-3)  # no cost head given
    router.remove_llm("newcomer")
    assert np.allclose(router.predict_scores(test.embeddings[:20], 0.02), before, atol=1e-6)
    np.testing.assert_allclose(router.predict_costs(test.embeddings[:20]), costs)


def test_predicted_costs_are_unbiased_per_llm(conditioned, splits):
    # The cost head's smearing correction makes the mean prediction the mean cost (what spend calibration needs).
    test = splits[2]
    predicted = conditioned.predict_costs(test.embeddings).mean(axis=0)
    np.testing.assert_allclose(predicted, test.cost.mean(axis=0), rtol=0.1)
    decision = conditioned.route(test.embeddings[:1], 0.02)[0]
    assert decision.expected_cost_usd == pytest.approx(
        conditioned.predict_costs(test.embeddings[:1])[0, conditioned.llms_.index(decision.llm)])


def test_bad_hyperparameters_are_named(splits):
    with pytest.raises(ValueError, match="backbone"):
        RadialRouter(backbone="lstm").fit(splits[0])
    with pytest.raises(ValueError, match="encoder_mode"):
        RadialRouter(encoder_mode="partial").fit(splits[0])


def test_finetune_mode_trains_the_encoder_a_few_steps():
    from radialrouter.data import RoutingDataset

    texts = ["add 2 and 3", "integral of x", "who wrote Hamlet", "capital of Peru",
             "sum 7 and 9", "derivative of x^2", "who painted Guernica", "capital of Chile"]
    quality = np.array([[1, 0], [1, 0], [0, 1], [0, 1]] * 2, dtype=float)
    ds = RoutingDataset.from_arrays(texts, quality, ["math-llm", "trivia-llm"], cost=np.full((8, 2), 1e-3))
    encoder = QueryEncoder(cache_dir=False, precision="fp32")
    weight = next(encoder.model.parameters())
    start = weight.detach().clone()
    router = RadialRouter(encoder_mode="finetune", encoder=encoder, steps=2, batch_size=8, d_model=32, n_heads=2,
                          n_clusters=2, patience=None, eval_every=1).fit(ds, ds.subset(np.arange(4)))
    assert router.training_["val_score"] is not None  # model selection embeds the validation texts itself
    assert not torch.equal(start, weight.detach())
    decisions = router.route(["capital of Peru"], lam=0.0)  # routes from text, through the fine-tuned encoder
    assert decisions[0].llm == decisions[0].ranking[0] and sorted(decisions[0].ranking) == ["math-llm", "trivia-llm"]
    with pytest.raises(Exception, match="texts"):
        router.predict(np.zeros((1, 384), np.float32))
    # The encoder has its own learning rate: at 0 it stays as it was.
    frozen_start = weight.detach().clone()
    RadialRouter(encoder_mode="finetune", encoder=encoder, encoder_lr=0.0, steps=2, batch_size=8, d_model=32,
                         n_heads=2, n_clusters=2, patience=None).fit(ds)
    assert torch.equal(frozen_start, weight.detach())


@pytest.mark.skipif(not (DEFAULT_DIR / "config.json").exists(), reason="the embedded default router is not built")
def test_embedded_default_routes_a_question():
    router = load_default()
    assert len(router.llms_) == 11
    d = router.route("What is the capital of France?")[0]
    assert d.llm in router.llms_ and abs(sum(d.probabilities.values()) - 1) < 1e-6
    cheap = router.route("What is the capital of France?", lam="cost-first")[0]
    assert cheap.expected_cost_usd <= d.expected_cost_usd + 1e-12
    result = CliRunner().invoke(__import__("radialrouter.cli", fromlist=["app"]).app,
                                ["route", "--json", "--candidates", "claude-v2,gpt-4-1106-preview",
                                 "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["llm"] in {"claude-v2", "gpt-4-1106-preview"}


@needs_shared
def test_train_command_on_routerbench3(tmp_path):
    from radialrouter.cli import app

    result = CliRunner().invoke(app, ["train", "--router", "radial", "--data", str(ROUTERBENCH3),
                                      "--out", str(tmp_path / "m"), "--steps", "20", "--per-lam", "--lam", "balance"])
    assert result.exit_code == 0, result.output
    assert "validation λ=0.0204" in result.output  # balance on RouterBench's price scale
    (tmp_path / "q.jsonl").write_text('{"prompt": "Write a Python function that reverses a list."}\n')
    result = CliRunner().invoke(app, ["route", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "q.jsonl"),
                                      "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.jsonl").read_text())["lam"] == 0.0204


def test_lam_above_the_trained_range_is_clamped_with_a_warning(conditioned, splits):
    from radialrouter.routers import LamRangeWarning

    x = splits[2].embeddings[:20]
    assert conditioned.lam_range() == (0.0, conditioned.lam_max)
    at_top = conditioned.route(x, lam=conditioned.lam_max)
    with pytest.warns(LamRangeWarning, match=r"λ = 1e\+09 is above the largest λ this router was trained on \(1\)"):
        clamped = conditioned.route(x, lam=1e9)
    assert [d.llm for d in clamped] == [d.llm for d in at_top] and {d.lam for d in clamped} == {1.0}


@pytest.mark.skipif(not (DEFAULT_DIR / "config.json").exists(), reason="the embedded default router is not built")
def test_cli_route_clamps_a_huge_lam_and_says_so():
    proc = subprocess.run([sys.executable, "-m", "radialrouter", "route", "--model", str(DEFAULT_DIR), "--json",
                           "--lam", "1e9", "Sort a list"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning: λ = 1e+09 is above the largest λ this router was trained on" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["lam"] == load_default().lam_range()[1]


@pytest.mark.parametrize("backbone", ["radial", "star", "transformer", "mlp"])
def test_cached_conditioning_gives_the_same_logits(backbone):
    """Inference reuses the λ-dependent, query-independent part of the pass; it must not change a single logit,
    with or without a candidate mask, and must follow the weights when they change."""
    from radialrouter.data import make_synthetic
    from radialrouter.routers.radial import RadialRouter

    ds = make_synthetic(n_queries=60, n_llms=4, seed=1)
    router = RadialRouter(backbone=backbone, steps=5, patience=None).fit(ds)
    router.net_.eval()
    x = torch.from_numpy(ds.embeddings[:7].astype(np.float32))
    mask = torch.tensor([[True, False, True, True]] * 7)
    for lam in (0.0, 0.02, 0.1):
        for m in (None, mask):
            with torch.inference_mode():
                torch.testing.assert_close(router.logits(x, lam, m, cached=True), router.logits(x, lam, m))
    with torch.no_grad():
        router.net_.llm.add_(1.0)  # the weights move: the memo must not serve the old conditioning
    with torch.inference_mode():
        torch.testing.assert_close(router.logits(x, 0.02, None, cached=True), router.logits(x, 0.02, None))


@pytest.mark.parametrize("backbone", ["radial", "star", "transformer", "mlp"])
def test_onnx_inference_matches_torch(backbone):
    """The serving path's ONNX Runtime copy of the network gives torch's scores and probabilities (any λ, with and
    without candidates, per-scenario models), follows weight and pool changes, and leaves torch training intact."""
    pytest.importorskip("onnxruntime")
    from radialrouter.policy.pool import clone

    ds = make_synthetic(n_queries=80, n_llms=4, seed=2)
    router = RadialRouter(backbone=backbone, steps=5, patience=None).fit(ds)
    x = ds.embeddings[:9]
    want = {(lam, c): router.predict_scores(x, lam, None if c is None else list(c)) for lam in (0.0, 0.02, 0.5)
            for c in (None, tuple(router.llms_[1:3]))}
    router.set_inference_backend("onnx")
    assert router.inference_backend == "onnx"
    for (lam, c), scores in want.items():
        np.testing.assert_allclose(router.predict_scores(x, lam, None if c is None else list(c)), scores, atol=2e-5)
    decision = router.route(x[:1], lam=0.02)[0]
    assert abs(sum(decision.probabilities.values()) - 1) < 1e-9
    assert router.net_.training is False  # the export must not switch dropout back on
    if backbone != "radial":
        return

    with torch.no_grad():
        router.net_.llm.add_(0.5)  # weights move: the ONNX copy is rebuilt, not reused
    router.set_inference_backend("torch")
    moved = router.predict_scores(x, 0.02)
    router.set_inference_backend("onnx")
    np.testing.assert_allclose(router.predict_scores(x, 0.02), moved, atol=2e-5)

    grown = clone(router)
    grown.set_inference_backend("onnx")
    grown.add_llm("newcomer", 1e-3, np.zeros(grown.d_model, dtype=np.float32))
    assert grown.predict_scores(x, 0.02).shape == (9, 5)

    fixed = RadialRouter(backbone=backbone, lam_conditioned=False, lam=0.1, steps=5, patience=None).fit(ds)
    per_scenario = fixed.predict_scores(x, 0.0)
    np.testing.assert_allclose(fixed.set_inference_backend("onnx").predict_scores(x, 0.0), per_scenario, atol=2e-5)


def test_inference_backend_without_onnxruntime(conditioned, monkeypatch):
    from radialrouter.policy.pool import clone
    from radialrouter.routers import radial as radial_module

    router = clone(conditioned)
    monkeypatch.setattr(radial_module, "onnx_runtime_available", lambda: False)
    with pytest.warns(UserWarning, match="onnxruntime is not installed"):
        router.set_inference_backend("auto")
    assert router.inference_backend == "torch"
    with pytest.raises(Exception, match="needs onnxruntime"):
        router.set_inference_backend("onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        router.set_inference_backend("tensorrt")


@pytest.fixture(scope="module")
def quality_router():
    """A RadialRouter with objective='quality' trained on synthetic data where one LLM misses every 7th cell."""
    ds = make_synthetic(n_queries=300, n_llms=4, seed=5)
    quality = ds.quality.copy()
    quality[::7, 1] = np.nan  # missing cells: trained around, never a NaN loss
    from dataclasses import replace

    train = replace(ds, quality=quality)
    return ds, RadialRouter(objective="quality", d_model=32, n_heads=2, steps=150, patience=None).fit(train)


def test_quality_objective_learns_per_llm_quality_and_skips_missing_cells(quality_router):
    """objective='quality': satellites predict each LLM's quality (missing cells masked out of the loss), so at λ = 0
    routing beats the best single LLM by a wide margin, and routing maximises q̂ − λ·cost, so a large λ moves
    decisions to cheaper LLMs."""
    ds, router = quality_router
    assert router.lam_range() == (0.0, float("inf"))  # λ enters at routing time only
    routed = ds.quality[np.arange(len(ds)), router.predict(ds.embeddings, 0.0)].mean()
    assert routed > ds.quality.mean(axis=0).max() + 0.1  # per-query quality was learned (0.89 vs 0.66 here)
    x = ds.embeddings[:50]
    costs = [router.predict_costs(x)[np.arange(50), router.predict(x, lam)].mean() for lam in (0.0, 0.5, 5.0)]
    assert costs[0] >= costs[1] >= costs[2] and costs[0] > costs[2]
    proba = router.route(x[:3], lam=0.1)[0].probabilities
    assert abs(sum(proba.values()) - 1) < 1e-9
    with pytest.raises(ValueError, match="objective must be one of"):
        RadialRouter(objective="mse").fit(ds)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_quality_objective_scores_the_same_on_onnx(quality_router):
    """inference: onnx gives the scores torch gives (the serving default runs a RadialRouter on ONNX Runtime)."""
    ds, router = quality_router
    x = ds.embeddings[:50]
    want = router.set_inference_backend("torch").predict_scores(x, 0.1)
    np.testing.assert_allclose(router.set_inference_backend("onnx").predict_scores(x, 0.1), want, atol=1e-5)
    router.set_inference_backend("torch")
