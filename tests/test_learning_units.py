"""Units of the learning loop: the serving policy's distribution, off-policy estimators against a known truth,
partial-label training, cost imputation, the ledger reader and judge labels (a mocked judge backend)."""

from __future__ import annotations

import dataclasses
import json

import httpx
import numpy as np
import pytest

from radialrouter.data import make_synthetic
from radialrouter.data.dataset import DataError, RoutingDataset
from radialrouter.learning.exploration import (
    Explorer,
    policy_distribution,
    squarecb_gamma,
    squarecb_probs,
    with_floor,
)
from radialrouter.learning.ledger_data import (
    LoggedTraffic,
    impute_costs,
    logged_traffic,
    read_ledger,
    to_partial_dataset,
)
from radialrouter.learning.ope import evaluate, overlap
from radialrouter.learning.partial import fit_partial
from radialrouter.ledger.store import Ledger, LedgerRow
from radialrouter.routers import RouterError, make_router
from radialrouter.serve import parse_config
from radialrouter.serve.judging import RUBRIC_VERSION, JudgeError, label_ledger, parse_grade
from radialrouter.serve.routing import RouteResult

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(explore: dict | None = None, **extra):
    llms = [{"name": n, "base_url": f"http://127.0.0.1:9/{n}/v1", "router_llm": f"r-{n}", "input_price": 1,
             "output_price": 2, "context_window": 1000} for n in ("a", "b", "c")]
    return parse_config({"router": {"explore": explore or {}}, "llms": llms, "ledger": {"path": None}, **extra})


def test_policy_distribution_and_explorer_logs_propensities():
    assert policy_distribution([3, 2, 1], "off", 0.1, 1.0).tolist() == [1, 0, 0]
    eps = policy_distribution([3, 2, 1], "epsilon", 0.3, 1.0)
    assert np.allclose(eps, [0.8, 0.1, 0.1])
    soft = policy_distribution([0.0, np.log(2), np.log(1)], "softmax", 0.1, 1.0)
    assert np.isclose(soft.sum(), 1) and soft.argmax() == 1
    result = RouteResult("a", ["a", "b", "c"], {"a": 0.9, "b": 0.5, "c": 0.1}, None, 0.0, 0.02, 5)
    off = Explorer(_config()).apply(result, "alice", "balance")
    assert off.llm == "a" and off.policy.propensity == 1.0 and off.policy.explore == "off"
    assert off.policy.candidates == ["r-a", "r-b", "r-c"]  # router names, ranking order
    explorer = Explorer(_config({"method": "epsilon", "epsilon": 0.6, "seed": 1, "keys": ["alice"]}))
    picks = [explorer.apply(result, "alice", "balance") for _ in range(600)]
    share = np.mean([p.llm == "a" for p in picks])
    assert 0.5 < share < 0.7  # 1 − ε + ε/3 = 0.6
    for p in picks:
        assert p.ranking[0] == p.llm and sorted(p.ranking) == ["a", "b", "c"]  # fallbacks keep the rest
        assert np.isclose(p.policy.propensity, 0.6 if p.llm == "a" else 0.2)
        assert p.policy.probs == [0.6, 0.2, 0.2] and p.policy.choice == f"r-{p.llm}"
    assert explorer.apply(result, "bob", "balance").policy.explore == "off"  # only the listed keys explore


def test_squarecb_probabilities_follow_inverse_gap_weighting():
    scores = np.array([[0.9, 0.8, 0.5, 0.1], [0.2, 0.7, 0.7, -np.inf]])
    p = squarecb_probs(scores, gamma=20.0)
    assert np.allclose(p.sum(1), 1.0) and (p >= 0).all()
    # row 0: m = 4, gaps 0.1, 0.4, 0.8 -> 1 / (4 + 20 gap); the best takes the rest
    expected = [1 / 6, 1 / 12, 1 / 20]
    assert np.allclose(p[0, 1:], expected) and np.isclose(p[0, 0], 1 - sum(expected))
    assert p[0].argmax() == 0 and np.all(np.diff(p[0]) < 0)  # larger gap, lower probability
    # row 1: a tie for the best goes to the first; −inf is never drawn and does not count in m
    assert p[1, 3] == 0.0 and np.isclose(p[1, 2], 1 / 3) and np.isclose(p[1, 0], 1 / (3 + 20 * 0.5))
    assert np.allclose(squarecb_probs(scores[:1], gamma=0.0), 0.25)  # γ = 0: uniform
    assert squarecb_probs(scores[:1], gamma=1e9)[0, 0] > 0.999  # γ → ∞: greedy
    # an explicit best that is not the argmax: negative gaps count as 0, the best still gets the most
    q = squarecb_probs(np.array([0.5, 0.9, 0.1]), gamma=10.0, best=np.array([0]))[0]
    assert np.isclose(q[1], 1 / 3) and np.isclose(q[2], 1 / (3 + 4)) and q[0] >= q.max() - 1e-12
    assert np.allclose(policy_distribution([0.9, 0.8, 0.5, 0.1], "squarecb", 0.1, 1.0, 20.0), p[0])
    assert squarecb_gamma(400) == 200.0 and squarecb_gamma(9, gamma_scale=2.0, gamma_exponent=1.0) == 18.0
    assert squarecb_gamma(10_000, gamma=50.0) == 50.0 and squarecb_gamma(0) == 10.0


def test_explorer_squarecb_logs_its_propensities_and_gamma():
    result = RouteResult("a", ["a", "b", "c"], {"a": 0.9, "b": 0.85, "c": 0.1}, None, 0.0, 0.02, 5)
    explorer = Explorer(_config({"method": "squarecb", "gamma": 10.0, "seed": 3}))
    picks = [explorer.apply(result, "alice", "balance") for _ in range(2000)]
    want = {"b": 1 / (3 + 0.5), "c": 1 / (3 + 8.0)}
    want["a"] = 1 - want["b"] - want["c"]
    for p in picks:
        assert p.policy.explore == "squarecb:10" and np.isclose(p.policy.propensity, want[p.llm])
        assert np.allclose(p.policy.probs, [want["a"], want["b"], want["c"]])
    shares = {k: np.mean([p.llm == k for p in picks]) for k in want}
    assert all(abs(shares[k] - want[k]) < 0.04 for k in want)
    scheduled = Explorer(_config({"method": "squarecb", "gamma_scale": 2.0, "gamma_exponent": 1.0, "seed": 0}))
    labels = [scheduled.apply(result, "alice", "balance").policy.explore for _ in range(3)]
    assert labels == ["squarecb:2", "squarecb:4", "squarecb:6"]  # γ = 2 · t
    with pytest.raises(Exception, match="gamma"):
        _config({"method": "squarecb", "gamma": -1.0})


def _igw(scores: np.ndarray, gamma: float) -> np.ndarray:
    """Plain SquareCB written out (best: the argmax), to check that floor 0 leaves it exactly as it was."""
    ok = np.isfinite(scores)
    m, best = ok.sum(), int(np.where(ok, scores, -np.inf).argmax())
    p = np.where(ok, 1.0 / (m + gamma * (scores[best] - np.where(ok, scores, 0.0))), 0.0)
    p[best] = 0.0
    p[best] = 1.0 - p.sum()
    return p


def test_squarecb_floor_mixes_in_a_uniform_share():
    scores = np.array([[0.9, 0.8, 0.5, 0.1, -0.4], [0.2, 0.7, 0.7, -np.inf, 0.1]])
    plain = squarecb_probs(scores, gamma=300.0)
    for row, s in zip(plain, scores, strict=True):
        assert np.array_equal(row, _igw(s, 300.0))  # floor 0 (the default): today's distribution, bit for bit
    assert np.array_equal(squarecb_probs(scores, gamma=300.0, floor=0.0), plain)
    for eps in (0.05, 0.1, 0.2, 0.9):
        p = squarecb_probs(scores, gamma=300.0, floor=eps)
        assert np.allclose(p.sum(1), 1.0)
        assert (p[0] >= eps / 5 - 1e-15).all()  # every candidate at least ε/K
        assert p[1, 3] == 0.0 and (np.delete(p[1], 3) >= eps / 4 - 1e-15).all()  # −inf: never, not in K
        assert np.allclose(p[0], (1 - eps) * plain[0] + eps / 5)
        assert np.allclose(np.delete(p[1], 3), (1 - eps) * np.delete(plain[1], 3) + eps / 4)
    # without a floor the far-off candidates get far less than ε/K at this γ, so the floor is what lifts them
    assert plain[0, -1] < 0.05 / 5
    ranked = [0.9, 0.8, 0.5, 0.1]
    assert np.array_equal(policy_distribution(ranked, "squarecb", 0.1, 1.0, 50.0), _igw(np.array(ranked), 50.0))
    floored = policy_distribution(ranked, "squarecb", 0.1, 1.0, 50.0, floor=0.2)
    assert np.allclose(floored, 0.8 * _igw(np.array(ranked), 50.0) + 0.05) and np.isclose(floored.sum(), 1.0)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="floor"):
            with_floor(plain, bad)


def test_explorer_squarecb_floor_is_logged_and_validated():
    result = RouteResult("a", ["a", "b", "c"], {"a": 0.9, "b": 0.85, "c": 0.1}, None, 0.0, 0.02, 5)
    explorer = Explorer(_config({"method": "squarecb", "gamma": 10.0, "floor": 0.3, "seed": 3}))
    igw = _igw(np.array([0.9, 0.85, 0.1]), 10.0)
    want = dict(zip("abc", 0.7 * igw + 0.1, strict=True))
    for p in [explorer.apply(result, "alice", "balance") for _ in range(50)]:
        assert p.policy.explore == "squarecb:10+floor:0.3" and np.isclose(p.policy.propensity, want[p.llm])
        assert np.allclose(p.policy.probs, list(want.values())) and min(p.policy.probs) >= 0.1 - 1e-12
    plain = Explorer(_config({"method": "squarecb", "gamma": 10.0, "seed": 3})).apply(result, "alice", "balance")
    assert plain.policy.explore == "squarecb:10" and _config().router.explore.floor == 0.0
    assert _config({"method": "squarecb", "floor": 0.999}).router.explore.floor == 0.999
    for bad in (1.0, -0.01, 2):
        with pytest.raises(Exception, match=r"router\.explore\.floor must be at least 0 and below 1"):
            _config({"method": "squarecb", "floor": bad})


def _bandit_log(n: int, eps: float, seed: int = 0) -> tuple[LoggedTraffic, np.ndarray]:
    """Logged traffic with known per-action mean quality (truth) and an ε-greedy logging policy."""
    rng = np.random.default_rng(seed)
    m = 3
    means = np.array([0.3, 0.6, 0.8])
    q = (rng.random((n, m)) < means).astype(float)
    probs = np.full((n, m), eps / m)
    probs[:, 0] += 1 - eps  # the logging policy prefers the worst LLM
    action = np.array([rng.choice(m, p=p) for p in probs])
    t = LoggedTraffic(request_ids=np.arange(n).astype(str).astype(object), prompts=np.full(n, "q", object),
                      llms=["x", "y", "z"], candidates=np.ones((n, m), bool), probs=probs, action=action,
                      reward=q[np.arange(n), action], cost=np.full(n, 1e-4), lam=np.full(n, 0.02),
                      router_version=np.full(n, "v", object), label_source=np.full(n, "client", object))
    return t, q


def test_ope_estimators_cover_the_truth_and_warn_without_overlap():
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in range(20):
        t, q = _bandit_log(600, eps=0.6, seed=seed)
        target = np.full(len(t), 2)  # always the best LLM
        truth = q[:, 2].mean() - 0.02 * 1000 * 1e-4
        q_hat = np.tile([0.3, 0.6, 0.7], (len(t), 1))  # a slightly wrong model: DR corrects it
        r = evaluate(t, target, lam=0.02, q_hat=q_hat, c_hat=np.full((len(t), 3), 1e-4), n_boot=300, seed=seed)
        assert not r.warnings
        for est in covered:
            e = r.estimates[est]["score"]
            covered[est] += e["low"] <= truth <= e["high"]
        assert abs(r.estimates["dr"]["cost"]["value"] - 0.1) < 1e-9  # cost in USD per 1,000 queries
    assert all(c >= 16 for c in covered.values()), covered  # 95 % intervals: ≥ 80 % of 20 runs
    # a deterministic logging policy says nothing about other LLMs
    t, _ = _bandit_log(300, eps=0.0)
    diag, warnings = overlap(t, np.full(len(t), 2))
    assert diag["unsupported_share"] == 1.0 and diag["matches"] == 0
    assert any("could not pick" in w for w in warnings) and any("effective sample size" in w for w in warnings)
    with pytest.raises(ValueError, match="labelled"):
        bad = t.subset(np.arange(len(t)))
        bad.reward[0] = np.nan
        evaluate(bad, np.zeros(len(t), int), lam=0.0)


def test_ope_scores_quality_minus_lambda_cost_at_the_new_policys_prices():
    """OPE estimates Score = quality − λ·cost (USD per 1,000 queries) of the *new* policy: with LLMs of unequal
    prices and an exact model, DR gives the policy's own cost exactly, and every estimator's Score moves down by λ ×
    that cost as λ grows."""
    from dataclasses import replace

    t, q = _bandit_log(3000, eps=0.6, seed=3)
    prices = np.array([1e-4, 5e-4, 2e-3])  # USD per query of x, y, z
    t = replace(t, cost=prices[t.action])
    target = np.full(len(t), 2)  # always z: cost 2.0 USD per 1,000 queries
    exact_q, exact_c = np.tile([0.3, 0.6, 0.8], (len(t), 1)), np.tile(prices, (len(t), 1))
    at0 = evaluate(t, target, lam=0.0, q_hat=exact_q, c_hat=exact_c, n_boot=200)
    at1 = evaluate(t, target, lam=0.1, q_hat=exact_q, c_hat=exact_c, n_boot=200)
    assert at1.estimates["dr"]["cost"]["value"] == pytest.approx(2.0)
    for est in ("ips", "snips", "dr"):
        e0, e1 = at0.estimates[est], at1.estimates[est]
        assert e0["quality"]["value"] == pytest.approx(e1["quality"]["value"])
        assert e1["score"]["value"] == pytest.approx(e1["quality"]["value"] - 0.1 * e1["cost"]["value"])
        assert e0["score"]["value"] == pytest.approx(e0["quality"]["value"])
        assert abs(e1["score"]["value"] - (0.8 - 0.2)) < 0.05, (est, e1["score"])  # truth: 0.8 − 0.1 × 2.0
        assert e1["score"]["low"] < e1["score"]["value"] < e1["score"]["high"]
    assert at1.n == len(t) and at1.lam == 0.1 and at1.to_dict()["reliable"] is True


def test_ope_runs_repeat_and_resamples_are_shared():
    """`radialrouter ope` repeats: the same log and policy give the same intervals; `bootstrap_counts` resamples each
    request with replacement (every row sums to n), and passing the same counts to two policies pairs them."""
    from radialrouter.learning.ope import bootstrap_counts

    t, q = _bandit_log(300, eps=0.6, seed=1)
    a = evaluate(t, np.full(len(t), 2), lam=0.02, n_boot=100)
    b = evaluate(t, np.full(len(t), 2), lam=0.02, n_boot=100)
    assert a.estimates == b.estimates and np.array_equal(a.samples["ips"], b.samples["ips"])
    counts = bootstrap_counts(len(t), 100, seed=0)
    assert counts.shape == (100, len(t)) and (counts.sum(axis=1) == len(t)).all() and (counts >= 0).all()
    assert np.array_equal(counts, bootstrap_counts(len(t), 100, seed=0))
    assert not np.array_equal(counts, bootstrap_counts(len(t), 100, seed=1))
    shared = evaluate(t, np.full(len(t), 2), lam=0.02, counts=counts)
    assert np.array_equal(shared.samples["ips"], evaluate(t, np.full(len(t), 2), lam=0.02, counts=counts,
                                                          seed=5).samples["ips"])
    assert len(shared.samples["snips"]) == 100


def test_ope_intervals_are_percentile_bootstrap_intervals_and_warnings_make_it_unreliable():
    """Intervals are (1 − alpha) percentile bootstrap intervals of the resampled estimates; a result with overlap
    warnings is not reliable, and its JSON form (`radialrouter ope --json`) carries everything."""
    t, _ = _bandit_log(400, eps=0.6, seed=2)
    r = evaluate(t, np.full(len(t), 2), lam=0.02, n_boot=400, alpha=0.1)
    for est in ("ips", "snips"):
        low, high = np.quantile(r.samples[est], [0.05, 0.95])
        assert r.estimates[est]["score"]["low"] == pytest.approx(low)
        assert r.estimates[est]["score"]["high"] == pytest.approx(high)
    assert evaluate(t, np.full(len(t), 2), lam=0.02, n_boot=50, seed=1).estimates != evaluate(
        t, np.full(len(t), 2), lam=0.02, n_boot=50, seed=0).estimates  # the seed picks the resamples
    q_hat = np.tile([0.3, 0.6, 0.8], (len(t), 1))
    no_cost_model = evaluate(t, np.full(len(t), 2), lam=0.02, q_hat=q_hat, n_boot=50)  # DR on the logged costs
    assert no_cost_model.estimates["dr"]["cost"]["value"] == pytest.approx(0.1)
    blind, _ = _bandit_log(300, eps=0.0)
    bad = evaluate(blind, np.full(len(blind), 2), lam=0.0, n_boot=50)
    assert bad.warnings and not bad.reliable and bad.diagnostics["matches"] == 0 and bad.diagnostics["ess"] == 0.0
    doc = bad.to_dict()
    assert doc == {"n": 300, "lam": 0.0, "estimates": bad.estimates, "diagnostics": bad.diagnostics,
                   "warnings": bad.warnings, "reliable": False}


def test_overlap_diagnostics_follow_their_definitions():
    """Overlap diagnostics as documented: w = 1[π = a] / p, effective sample size (Σw)² / Σw², the share of requests
    where the new policy picks an LLM the logging policy could not (p = 0), matches and the largest weight."""
    t, _ = _bandit_log(4, eps=0.6, seed=0)
    t.action[:] = [0, 1, 2, 0]
    t.probs[:] = [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]
    actions = np.array([0, 1, 0, 2])  # agrees on the first two; the fourth picks z, which had p = 0.2
    t.probs[1, 2] = 0.0
    diag, warnings = overlap(t, actions)
    w = np.array([1 / 0.5, 1 / 0.8, 0.0, 0.0])
    assert diag["n"] == 4 and diag["matches"] == 2 and diag["match_share"] == 0.5
    assert diag["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert diag["max_weight"] == pytest.approx(2.0) and diag["min_propensity"] == pytest.approx(0.5)  # of a_i
    assert diag["unsupported_share"] == 0.0 and any("effective sample size" in m for m in warnings)
    diag, warnings = overlap(t, np.array([2, 2, 2, 2]))  # the first two requests could not have gone to z
    assert diag["unsupported_share"] == 0.5 and any("could not pick" in m for m in warnings)


def test_ope_policy_actions_are_the_routers_picks_among_each_requests_candidates():
    """What OPE evaluates: the router's choice for each logged request, among the LLMs that request could go to, at
    the request's own λ (or a given one), as indices in the log's LLM order."""
    from radialrouter.learning.ope import policy_actions, quality_model

    data = make_synthetic(n_queries=60, n_llms=3, seed=0)
    router = make_router("knn", k=3).fit(data)
    t, _ = _bandit_log(len(data), eps=0.6)
    t = dataclasses.replace(t, llms=["llm-2", "llm-0", "llm-1"])  # another order than the router's
    t.candidates[::2, 0] = False  # every other request could not go to llm-2
    x = data.embeddings
    picks = policy_actions(router, t, x, lam=0.0)
    for i in range(len(t)):
        allowed = np.array([router.llms_.index(name) for name, ok in zip(t.llms, t.candidates[i]) if ok])
        mask = np.zeros(len(router.llms_), bool)
        mask[allowed] = True
        assert t.llms[picks[i]] == router.llms_[router.predict(x[i:i + 1], 0.0, candidates=mask[None])[0]]
    assert not (picks[::2] == 0).any()
    q_hat, c_hat = quality_model(router, x, t.llms)
    assert q_hat.shape == c_hat.shape == (len(t), 3)
    np.testing.assert_allclose(c_hat[:, 0], router.predict_costs(x)[:, router.llms_.index("llm-2")])
    with pytest.raises(ValueError, match=r"does not know the logged LLM\(s\) \['gpt-9'\]$"):
        policy_actions(router, dataclasses.replace(t, llms=["llm-2", "llm-0", "gpt-9"]), x, lam=0.0)
    # without a λ, each request is routed at its own logged λ: cost-first requests go to cheaper LLMs
    own = dataclasses.replace(t, lam=np.where(np.arange(len(t)) % 2 == 0, 0.0, 10.0))
    at_own = policy_actions(router, own, x)
    cost = router.predict_costs(x)
    order = [router.llms_.index(name) for name in t.llms]
    picked_cost = cost[np.arange(len(t)), np.array(order)[at_own]]
    assert (at_own[::2] == policy_actions(router, t, x, lam=0.0)[::2]).all()
    assert (at_own[1::2] == policy_actions(router, t, x, lam=10.0)[1::2]).all()
    assert picked_cost[1::2].mean() < picked_cost[::2].mean()
    assert (policy_actions(router, own, x, lam=0.0) == picks).all()  # a given λ overrides the logged ones
    assert ((q_hat >= 0) & (q_hat <= 1)).all()


def _partial(n: int = 120, seed: int = 0) -> tuple[RoutingDataset, RoutingDataset]:
    full = make_synthetic(n_queries=n, n_llms=3, seed=seed)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(full))
    action = rng.integers(0, 3, len(full))
    quality = np.full(full.quality.shape, np.nan)
    quality[rows, action] = full.quality[rows, action]
    from dataclasses import replace

    return full, replace(full, quality=quality)


def test_partial_labels_masked_imputed_and_refused():
    full, part = _partial()
    emb = np.random.default_rng(0).normal(size=(len(full), 8)).astype(np.float32)
    part = part.with_embeddings(emb)
    with pytest.raises(RouterError, match="unknown"):
        make_router("best-single").fit(part)
    mlp = fit_partial(make_router("mlp", steps=30), part)
    assert mlp.training_["partial_labels"]["method"] == "masked loss"
    assert mlp.label_counts_.tolist() == np.isfinite(part.quality).sum(0).tolist()
    pessimistic = mlp.predict_scores(emb, 0.0)
    assert np.isfinite(pessimistic).all()
    mlp.pessimism = 0.0  # routing on the plain estimates: every LLM scores higher
    assert (mlp.predict_scores(emb, 0.0) > pessimistic).all()
    warm = make_router("mlp", steps=1, lr=1e-6)
    warm.init_from = make_router("mlp", steps=40).fit(full.with_embeddings(emb))  # full information
    fit_partial(warm, part)
    assert np.allclose(warm._quality(emb), warm.init_from._quality(emb), atol=1e-3)  # started from its weights
    other = make_router("mlp", steps=1)
    other.init_from = make_router("knn").fit(full.with_embeddings(emb))
    with pytest.raises(RouterError, match="warm-start"):
        other.fit(part)
    knn = fit_partial(make_router("knn", k=5), part)
    q, _ = knn._neighbour_means(emb)
    assert np.isfinite(q).all() and knn.training_["partial_labels"]["known_cells"] == len(part)
    best = fit_partial(make_router("best-single"), part, imputer=make_router("mlp", steps=30))
    assert best.training_["partial_labels"]["method"].startswith("imputed")
    radial = fit_partial(make_router("radial", steps=20, d_model=16, n_clusters=2), part,
                         imputer=make_router("knn", k=5))
    assert radial.training_["partial_labels"]["method"].startswith("imputed")
    assert np.isfinite(radial.predict_scores(emb, 0.02)).all()
    with pytest.raises(RouterError, match="cannot learn"):
        fit_partial(make_router("oracle"), part)


def _tiny_partial() -> RoutingDataset:
    """Six queries on a line in 2-d (three near (1, 0), three near (0, 1)), two LLMs, one label per query."""
    emb = np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1]], dtype=np.float32)
    quality = np.array([[1, np.nan], [1, np.nan], [np.nan, 0], [0, np.nan], [np.nan, 1], [np.nan, 1]])
    return RoutingDataset.from_arrays([f"q{i}" for i in range(6)], quality, ["a", "b"], cost=np.full((6, 2), 1e-4),
                                      tasks=["t"] * 6).with_embeddings(emb)


def test_knn_partial_label_options_shrinkage_shared_neighbourhood_pessimism(tmp_path):
    from radialrouter.routers import from_pretrained

    data = _tiny_partial()
    x = np.array([[1, 0.05]], dtype=np.float32)  # next to the first three queries
    plain = make_router("knn", k=2).fit(data)  # default: per LLM, the 2 nearest queries where it is known
    q, _ = plain._neighbour_means(x)
    assert np.allclose(q, [[1.0, 0.5]])  # a: q0, q1; b: q2 (0) and q4 (1)
    # at λ = 0 the routing score is that mean quality itself (no pessimism by default): a is routed to
    assert np.allclose(plain.predict_scores(x, 0.0), [[1.0, 0.5]]) and plain.predict(x, 0.0).tolist() == [0]
    # shrinkage toward each LLM's mean over all its labels (a: 2/3, b: 2/3) with s pseudo-labels
    shrunk = make_router("knn", k=2, shrinkage=2.0).fit(data)
    q_s, _ = shrunk._neighbour_means(x)
    assert np.allclose(q_s, [[(2 * 1 + 2 * 2 / 3) / 4, (2 * 0.5 + 2 * 2 / 3) / 4]])
    assert np.allclose(make_router("knn", k=2, shrinkage=1e9).fit(data)._neighbour_means(x)[0], 2 / 3)
    # shared neighbourhood: the 3 nearest queries overall (q0, q1, q2) — a is known twice there, b once
    shared = make_router("knn", k=3, neighbours="shared").fit(data)
    q_sh, _, labels = shared._neighbour_stats(x)
    assert np.allclose(q_sh, [[1.0, 0.0]]) and np.allclose(labels, [[2, 1]])
    q_sh1, _, labels1 = make_router("knn", k=1, neighbours="shared", shrinkage=1.0).fit(data)._neighbour_stats(x)
    assert np.allclose(q_sh1, [[(1 + 2 / 3) / 2, 2 / 3]]) and np.allclose(labels1, [[2, 1]])  # b: none nearby
    # pessimism: one standard error sqrt(q(1 − q) / labels) off the estimate, only when routing
    pess = make_router("knn", k=3, neighbours="shared", shrinkage=1.0, pessimism=1.0).fit(data)
    q_p, _, n_p = pess._neighbour_stats(x)
    assert np.allclose(pess.predict_scores(x, 0.0), q_p - np.sqrt(q_p * (1 - q_p) / n_p))
    no_pess = make_router("knn", k=3, neighbours="shared", shrinkage=1.0).fit(data)
    assert np.allclose(no_pess.predict_scores(x, 0.0), q_p) and (pess.predict_scores(x, 0.0) < q_p).all()
    # full information: the options change nothing
    full = data.with_embeddings(data.embeddings)
    from dataclasses import replace

    full = replace(full, quality=np.nan_to_num(data.quality, nan=0.5))
    assert np.allclose(make_router("knn", k=2, shrinkage=5.0, pessimism=2.0, neighbours="shared").fit(full)
                       .predict_scores(x, 0.02), make_router("knn", k=2).fit(full).predict_scores(x, 0.02))
    loaded = from_pretrained(pess.save_pretrained(tmp_path / "knn"))
    assert np.allclose(loaded.predict_scores(x, 0.02), pess.predict_scores(x, 0.02))
    with pytest.raises(RouterError, match="neighbours"):
        make_router("knn", neighbours="global").fit(data)
    with pytest.raises(RouterError, match="shrinkage"):
        make_router("knn", shrinkage=-1.0).fit(data)


def test_mlp_ensemble_averages_members_and_saves(tmp_path):
    from radialrouter.routers import from_pretrained

    full, part = _partial(60)
    emb = np.random.default_rng(0).normal(size=(len(full), 8)).astype(np.float32)
    part = part.with_embeddings(emb)
    single = make_router("mlp", steps=20).fit(part)
    assert not any(k.startswith("members") for k in single.module_.state_dict())  # the default is unchanged
    ens = make_router("mlp", steps=20, ensemble=3).fit(part)
    import torch

    members = [torch.sigmoid(m(torch.from_numpy(emb))) for m in ens.module_.members]
    assert not torch.allclose(members[0], members[1])  # different initialisations
    ens.module_.eval()
    with torch.no_grad():
        logits = torch.stack([m(torch.from_numpy(emb)) for m in ens.module_.members]).mean(0)
    assert np.allclose(ens._quality(emb), torch.sigmoid(logits).numpy(), atol=1e-6)
    assert np.isfinite(ens.predict_scores(emb, 0.02)).all() and ens._quality(emb).shape == (len(emb), 3)
    make_router("mlp", steps=5, ensemble=2).fit(full.with_embeddings(emb))  # full information too
    loaded = from_pretrained(ens.save_pretrained(tmp_path / "ens"))
    assert np.allclose(loaded.predict_scores(emb, 0.02), ens.predict_scores(emb, 0.02))
    with pytest.raises(RouterError, match="ensemble"):
        make_router("mlp", ensemble=0).fit(part)


def test_radial_quality_objective_trains_on_partial_labels_and_kl_refuses():
    """RadialRouter masks unknown cells only with objective='quality'; the KL objective refuses them by name."""
    full, part = _partial()
    part = part.with_embeddings(np.random.default_rng(0).normal(size=(len(full), 8)).astype(np.float32))
    with pytest.raises(RouterError, match=r"cells are unknown.*radial with objective='quality'"):
        make_router("radial", steps=5, d_model=16, n_clusters=2).fit(part)
    quality = make_router("radial", objective="quality", steps=20, d_model=16, n_clusters=2)
    assert quality.partial_labels and not make_router("radial").partial_labels
    _, part = _partial()  # the synthetic embeddings this time: a query's LLM can be learned from them
    fit_partial(quality, part)
    assert quality.training_["partial_labels"]["method"] == "masked loss"
    # Learned from one label per query: on fresh queries at λ = 0 it routes as well as the best single LLM (on this
    # synthetic pool the strongest LLM is best nearly everywhere), far above a random pick.
    test = make_synthetic(n_queries=400, n_llms=3, seed=1)
    routed = test.quality[np.arange(len(test)), quality.predict(test.embeddings, 0.0)].mean()
    assert routed >= test.quality.mean(axis=0).max() - 0.02 and routed > test.quality.mean() + 0.15


def test_routers_trained_on_partial_labels_save_and_load(tmp_path):
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.routers import from_pretrained

    full, part = _partial(40)
    enc = QueryEncoder("static", cache_dir=False)
    part = part.embed(enc, progress=False)
    for router in (make_router("knn", k=3), make_router("mlp", steps=20), make_router("ridge")):
        router.fit(part)
        loaded = from_pretrained(router.save_pretrained(tmp_path / router.name))
        assert np.allclose(loaded.predict_scores(part.embeddings, 0.02), router.predict_scores(part.embeddings, 0.02))


def test_ridge_learns_each_llms_linear_quality_from_its_own_labels(tmp_path):
    """Per LLM, a closed-form ridge on the rows where its label is known: with one label per query it recovers
    linear qualities, an LLM without a label predicts the mean of all labels, ``pessimism`` lowers every estimate
    (most for the LLM with the fewest labels), and a saved router predicts the same."""
    from radialrouter.routers import from_pretrained

    rng = np.random.default_rng(0)
    n, d = 600, 4
    x = rng.normal(size=(n, d)).astype(np.float32)
    truth = 0.5 + 0.1 * np.stack([x[:, 0], -x[:, 0], 0.5 * x[:, 1], np.zeros(n)], axis=1)  # within [0, 1] here
    action = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])  # the fourth LLM is never called
    quality = np.full((n, 4), np.nan)
    quality[np.arange(n), action] = truth[np.arange(n), action]
    data = RoutingDataset.from_arrays([f"q{i}" for i in range(n)], quality, ["a", "b", "c", "never"],
                                      cost=np.full((n, 4), 1e-4), tasks=["t"] * n).with_embeddings(x)
    ridge = fit_partial(make_router("ridge", alpha=1e-3), data)
    assert ridge.training_["partial_labels"]["method"] == "masked loss"
    assert ridge.label_counts_.tolist() == np.bincount(action, minlength=4).tolist()
    q = ridge._quality(x)
    assert np.abs(q[:, :3] - truth[:, :3]).max() < 0.01  # linear truth recovered from each LLM's own labels
    assert np.allclose(q[:, 3], np.nanmean(quality))  # no label: the mean of all labels
    assert (q[:, :3].argmax(1) == truth[:, :3].argmax(1)).mean() > 0.95
    strong = fit_partial(make_router("ridge", alpha=1e6), data)  # shrunk to each LLM's mean label
    assert np.allclose(strong._quality(x)[:, :3], np.nanmean(quality[:, :3], axis=0), atol=2e-3)
    pess = fit_partial(make_router("ridge", alpha=1e-3, pessimism=1.0), data)
    drop = ridge.predict_scores(x, 0.0) - pess.predict_scores(x, 0.0)
    assert (drop > 0).all() and (drop[:, 2].mean() > drop[:, 0].mean())  # 60 labels of c, 360 of a
    loaded = from_pretrained(pess.save_pretrained(tmp_path / "ridge"))
    assert np.allclose(loaded.predict_scores(x, 0.02), pess.predict_scores(x, 0.02))
    with pytest.raises(RouterError, match="alpha"):
        make_router("ridge", alpha=0.0).fit(data)


def test_mlp_epochs_caps_the_steps_of_a_small_log():
    """``epochs``: at most that many passes over the rows (capped at ``steps``), so a learner refitted on a growing
    log trains its first rows for few steps; unset, ``steps`` whatever the size."""
    assert make_router("mlp", steps=600).train_steps(100) == 600
    capped = make_router("mlp", steps=600, epochs=20, batch_size=64)
    assert [capped.train_steps(n) for n in (100, 500, 2000, 10_000)] == [32, 157, 600, 600]
    _, part = _partial(60)
    part = part.with_embeddings(np.random.default_rng(0).normal(size=(len(part), 8)).astype(np.float32))
    fitted = make_router("mlp", steps=600, epochs=2, batch_size=16).fit(part)
    assert fitted.training_["steps"] == 8


def test_impute_costs_scales_by_query_size():
    action = np.array([0, 1, 0, 1])
    cost = np.array([1.0, 10.0, 2.0, 20.0])  # LLM 1 costs 10× LLM 0; queries 2 and 3 are twice as long
    out = impute_costs(action, cost, 3, prior=np.array([1.0, 1.0, 5.0]))
    assert np.allclose(out[:, :2], [[1, 10], [1, 10], [2, 20], [2, 20]], rtol=0.35)
    assert np.allclose(out[[0, 2], 0], [1.0, 2.0]) and out[0, 2] > 0  # observed cells kept; never-called: prior


def _ledger_with_rows(path, rows: list[LedgerRow]) -> Ledger:
    ledger = Ledger(path)
    for done in [ledger.record(r) for r in rows]:
        assert done.result(timeout=30)  # committed
    return ledger


def _row(i: int, **kw) -> LedgerRow:
    base = dict(request_id=f"rr-{i}", ts=float(i), client="alice", model="radial", mode="balance", lam=0.02,
                llm="a", ranking=["a", "b"], prompt=f"question {i}", choice="r-a", propensity=0.75,
                candidates=["r-a", "r-b"], policy_probs=[0.75, 0.25], explore="epsilon:0.5", router_version="v1",
                cost_usd=1e-4, response=f"answer {i}")
    return LedgerRow(**{**base, **kw})


def test_ledger_reader_keeps_only_usable_labelled_requests(tmp_path):
    rows = [_row(0), _row(1), _row(2, fallback=True, attempts=[{"llm": "b", "error": "http_503"}]),
            _row(3, status="upstream_failed"), _row(4, choice=None, candidates=None, policy_probs=None)]
    ledger = _ledger_with_rows(tmp_path / "l.sqlite", rows)
    ledger.record_feedback("rr-0", "client", 1.0, client="alice", ts=1.0)
    ledger.record_feedback("rr-0", "judge:a", 0.2, ts=2.0)
    ledger.record_feedback("rr-1", "judge:a", 0.4, ts=2.0)
    ledger.close()
    traffic = logged_traffic(*read_ledger(tmp_path / "l.sqlite"))
    assert traffic.request_ids.tolist() == ["rr-0", "rr-1"] and traffic.llms == ["r-a", "r-b"]
    assert traffic.reward.tolist() == [1.0, 0.4]  # the client's rating wins over the judge's
    assert traffic.propensity.tolist() == [0.75, 0.75]
    ds = to_partial_dataset(traffic)
    assert np.isnan(ds.quality[:, 1]).all() and ds.quality[:, 0].tolist() == [1.0, 0.4]
    no_prompts = _ledger_with_rows(tmp_path / "n.sqlite", [_row(0, prompt=None)])
    no_prompts.close()
    with pytest.raises(DataError, match="log_prompts"):
        logged_traffic(*read_ledger(tmp_path / "n.sqlite"))
    with pytest.raises(FileNotFoundError):
        read_ledger(tmp_path / "absent.sqlite")


def test_issue12_era_sqlite_log_is_migrated_and_read(tmp_path):
    """A decision log written by the sqlite3 ledger (learning columns and feedback table, no schema_migrations)
    opens with the SQLAlchemy ledger, keeps its rows, takes new ones; a log older than the learning columns reads."""
    import sqlite3

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("""CREATE TABLE decisions (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL,
            model TEXT, mode TEXT, lam REAL, llm TEXT, ranking TEXT, attempts TEXT, fallback INTEGER, stream INTEGER,
            status TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, cost_source TEXT,
            latency_ms REAL, prompt TEXT, choice TEXT, propensity REAL, candidates TEXT, policy_probs TEXT,
            explore TEXT, router_version TEXT, response TEXT)""")
        db.execute("""CREATE TABLE feedback (request_id TEXT NOT NULL, source TEXT NOT NULL, ts REAL NOT NULL,
            client TEXT, score REAL NOT NULL, comment TEXT, meta TEXT, PRIMARY KEY (request_id, source))""")
        db.execute("INSERT INTO decisions VALUES ('rr-0', 0, 'alice', 'radial', 'balance', 0.02, 'a', '[\"a\"]', "
                   "'[]', 0, 0, 'ok', 1, 1, 1e-4, 'usage', 1.0, 'question 0', 'r-a', 0.75, '[\"r-a\", \"r-b\"]', "
                   "'[0.75, 0.25]', 'epsilon:0.5', 'v1', 'answer 0')")
        db.execute("INSERT INTO feedback VALUES ('rr-0', 'client', 1, 'alice', 1.0, NULL, NULL)")
    ledger = _ledger_with_rows(old, [_row(1)])
    ledger.record_feedback("rr-1", "client", 0.5, client="alice", ts=2.0)
    ledger.close()
    traffic = logged_traffic(*read_ledger(old))
    assert traffic.request_ids.tolist() == ["rr-0", "rr-1"] and traffic.reward.tolist() == [1.0, 0.5]
    first = tmp_path / "first-release.sqlite"  # no learning columns at all: nothing usable, said so
    with sqlite3.connect(first) as db:
        db.execute("CREATE TABLE decisions (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, client TEXT NOT NULL, "
                   "status TEXT, prompt TEXT)")
        db.execute("INSERT INTO decisions VALUES ('rr-9', 0, 'alice', 'ok', 'q')")
    decisions, feedback = read_ledger(first)
    assert decisions[0]["request_id"] == "rr-9" and feedback == []
    with pytest.raises(DataError, match="1 no policy log"):
        logged_traffic(decisions, feedback)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="junk.sqlite"):
        read_ledger(tmp_path / "junk.sqlite")


def test_hot_swap_takes_the_new_routers_tradeoffs_unless_the_file_set_them(tmp_path):
    """Trade-off names resolve on the serving router's price scale: a swapped-in router brings its own presets,
    as at start, unless the config file pinned `tradeoffs`; the swap loads through `load_router` (inference)."""
    from radialrouter.core.encoders import QueryEncoder
    from radialrouter.routers import from_pretrained
    from radialrouter.serve.api.admin import swap_router
    from radialrouter.serve.app import create_app
    from radialrouter.serve.routing import parse_model

    enc = QueryEncoder("static", cache_dir=False)
    prompts = [f"question number {i} about topic {i % 3}" for i in range(12)]
    for name, scale in (("first", 1.0), ("second", 50.0)):
        q = np.tile([0.2, 0.6, 0.9], (12, 1))
        ds = RoutingDataset.from_arrays(prompts, q, ["r-a", "r-b", "r-c"], split=["train"] * 12,
                                        cost=np.tile([1e-5, 1e-4, 1e-3], (12, 1)) * scale).embed(enc, progress=False)
        make_router("knn", k=3).fit(ds).save_pretrained(tmp_path / name)
    second = from_pretrained(tmp_path / "second").presets_
    assert second != from_pretrained(tmp_path / "first").presets_
    for pinned in (None, {"balance": 0.5, "cost-first": 2.0, "performance-first": 0.0}):
        config = _config(tradeoffs=pinned)
        config = config.model_copy(update={"router": config.router.model_copy(update={"path": tmp_path / "first"})})
        state = create_app(config).state.serve
        out = swap_router(state, tmp_path / "second")
        assert out["version"] == state.router_version and state.router.presets_ == second
        want = second if pinned is None else pinned
        assert state.config.tradeoffs == want and state.config.router.path == tmp_path / "second"
        assert parse_model("radial:balance", state.config).lam == want["balance"]


def test_parse_grade():
    assert parse_grade('{"score": 7, "reason": "ok"}') == (0.7, "ok")
    assert parse_grade('Sure: {"score": 10}') == (1.0, "")
    for bad in ("seven", '{"score": 11}', '{"score": true}', '{"grade": 5}', ""):
        with pytest.raises(JudgeError):
            parse_grade(bad)


def test_label_ledger_with_a_judge_from_the_pool(tmp_path):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((str(request.url), request.headers.get("authorization"), body))
        answer = body["messages"][1]["content"]
        content = '{"score": 9, "reason": "right"}' if "answer 0" in answer else "I cannot grade this"
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}],
                                         "usage": {"prompt_tokens": 1000, "completion_tokens": 10}})

    llms = [{"name": "judge", "base_url": "http://judge.test/v1", "input_price": 1.0, "output_price": 2.0,
             "context_window": 8000, "model": "judge-2026"},
            {"name": "a", "base_url": "http://a.test/v1", "input_price": 1, "output_price": 1, "context_window": 10}]
    config = parse_config({"llms": llms, "ledger": {"path": None}})
    ledger = _ledger_with_rows(tmp_path / "l.sqlite", [_row(0), _row(1), _row(2, response=None)])
    ledger.close()
    summary = label_ledger(tmp_path / "l.sqlite", config, "judge", transport=httpx.MockTransport(handler))
    assert summary["graded"] == 1 and summary["failed"] == 1 and summary["rubric_version"] == RUBRIC_VERSION
    assert summary["cost_usd"] == pytest.approx(2 * (1000 * 1.0 + 10 * 2.0) / 1e6)
    assert all(url == "http://judge.test/v1/chat/completions" and b["model"] == "judge-2026" for url, _, b in seen)
    assert "correctness first" in seen[0][2]["messages"][0]["content"]
    _, feedback = read_ledger(tmp_path / "l.sqlite")
    assert [(f["request_id"], f["source"], f["score"]) for f in feedback] == [("rr-0", "judge:judge", 0.9)]
    meta = json.loads(feedback[0]["meta"])
    assert meta["rubric_version"] == RUBRIC_VERSION and meta["judge"] == "judge" and meta["cost_usd"] > 0
    again = label_ledger(tmp_path / "l.sqlite", config, "judge", transport=httpx.MockTransport(handler))
    assert again["graded"] == 0 and len(seen) == 3  # rr-0 is not graded twice; rr-1 is retried
    with pytest.raises(ValueError, match="not in the config's pool"):
        label_ledger(tmp_path / "l.sqlite", config, "nobody")


def test_train_from_ledger_refuses_options_it_does_not_use(tmp_path):
    from typer.testing import CliRunner

    from radialrouter.cli import app as cli_app

    res = CliRunner().invoke(cli_app, ["train", "--from-ledger", str(tmp_path / "l.sqlite"), "--out",
                                       str(tmp_path / "o"), "--router", "auto", "--candidates", "mlp,knn"])
    assert isinstance(res.exception, ValueError)  # `radialrouter` prints it as one line (cli.main)
    assert "--from-ledger does not take --router auto, --auto-candidates" in str(res.exception)


def test_knn_reuses_neighbours_across_lams_and_not_across_inputs():
    """A λ sweep over the same queries searches neighbours once; other queries, k or data never reuse them."""
    from radialrouter.data.synthetic import make_synthetic
    from radialrouter.routers import make_router

    data = make_synthetic(n_queries=200, n_llms=3, seed=0)
    train, test = data.select("train"), data.select("test")
    router = make_router("knn", k=5).fit(train)
    calls = []
    compute = router._compute_neighbour_stats
    router._compute_neighbour_stats = lambda x: calls.append(len(x)) or compute(x)
    first = [router.predict_scores(test, lam) for lam in (0.0, 0.01, 0.1)]
    assert calls == [len(test)]
    fresh = make_router("knn", k=5).fit(train)
    for lam, scores in zip((0.0, 0.01, 0.1), first):
        np.testing.assert_allclose(scores, fresh.predict_scores(test, lam))
    router.predict_scores(train, 0.0)
    router.k_ = 7
    router.predict_scores(train, 0.0)
    assert calls == [len(test), len(train), len(train)]


def test_a_scorer_trained_on_one_constant_label_predicts_that_label():
    """An LLM right (or wrong, or at a fixed pass rate) on every training query gets a constant scorer: zero weights
    on the embedding and that rate as its prediction (clipped away from 0 and 1 so the log-odds stay finite)."""
    from radialrouter.routers._common import fit_soft_logistic, sigmoid

    x = np.random.default_rng(0).normal(size=(20, 3))
    for label, expected in ((1.0, 1 - 1e-6), (0.0, 1e-6), (0.3, 0.3)):
        coef, intercept = fit_soft_logistic(x, np.full(20, label))
        assert coef.shape == (3,) and not coef.any()
        assert sigmoid(x @ coef + intercept) == pytest.approx(np.full(20, expected), rel=1e-6)


def test_the_cost_heads_ridge_penalty_is_the_routers_cost_alpha():
    """``cost_alpha`` is the ridge penalty of the per-query cost head: a huge one leaves no weight on the query, so
    each LLM's predicted cost is the same for every query (its training mean); the default follows the queries."""
    ds = make_synthetic(n_queries=200, seed=2)
    train, test = ds.select("train"), ds.select("test")
    # per-query costs that depend on the query (prompt length grows along the first embedding axis)
    scale = np.exp(train.embeddings[:, :1].astype(np.float64))
    train = dataclasses.replace(train, cost=train.cost * scale)
    flat = make_router("mlp", steps=5, cost_alpha=1e9).fit(train).predict_costs(test)
    follows = make_router("mlp", steps=5).fit(train).predict_costs(test)
    assert np.ptp(flat, axis=0) == pytest.approx(np.zeros(flat.shape[1]), abs=1e-9)
    np.testing.assert_allclose(flat[0], train.cost.mean(axis=0), rtol=0.05)
    assert (np.ptp(follows, axis=0) > 0.1 * follows.mean(axis=0)).all()  # more than 10 % apart across queries


def test_the_operating_point_chosen_at_a_lambda_ties_to_the_cheaper_one():
    """Of stored operating points with the same Score at λ, the cheaper one is chosen."""
    from radialrouter.routers._common import best_setting

    assert best_setting(np.array([0.5, 0.5, 0.3]), np.array([2.0, 1.0, 0.5]), 0.0) == 1
    assert best_setting(np.array([0.5, 0.6, 0.3]), np.array([1.0, 2.0, 0.5]), 0.1) == 0  # Scores 0.4, 0.4, 0.25
    assert best_setting(np.array([0.5, 0.6, 0.3]), np.array([1.0, 2.0, 0.5]), 1.0) == 2  # −0.5, −1.4, −0.2


# ----------------------------------------------------------------- what the quality-regressor routers promise
def test_the_cost_head_predicts_mean_costs_not_geometric_means():
    """Spend targets need unbiased means: with no weight on the query (a huge ridge penalty) the cost head predicts
    each LLM's arithmetic mean cost, not the geometric mean a plain log regression gives; costs that are exactly
    log-linear in the embedding are reproduced; a zero cost stays finite and positive."""
    from radialrouter.routers._common import fit_cost_head, predict_cost_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    cost = np.exp(rng.normal(size=(50, 2)))  # log-normal: the mean is well above the geometric mean
    w, b = fit_cost_head(x, cost, alpha=1e12)
    np.testing.assert_allclose(predict_cost_head(x, w, b), np.broadcast_to(cost.mean(0), cost.shape), rtol=1e-6)
    assert (cost.mean(0) > np.exp(np.log(cost).mean(0)) * 1.2).all()
    true_w, true_b = np.array([[0.5, -1.0], [0.2, 0.0], [-0.3, 0.7]]), np.array([-6.0, -4.0])
    exact = np.exp(x @ true_w + true_b)
    w, b = fit_cost_head(x, exact, alpha=1e-9)
    np.testing.assert_allclose(w, true_w, atol=1e-6)
    np.testing.assert_allclose(predict_cost_head(x, w, b), exact, rtol=1e-5)
    np.testing.assert_allclose(predict_cost_head(x[:1] + 1.0, w, b), np.exp((x[:1] + 1.0) @ true_w + true_b),
                               rtol=1e-5)  # queries it never saw
    w, b = fit_cost_head(x, np.column_stack([np.zeros(50), exact[:, 1]]), alpha=1.0)
    assert np.isfinite(predict_cost_head(x, w, b)).all() and (predict_cost_head(x, w, b) > 0).all()


def test_best_llm_takes_the_best_known_score_ties_to_the_cheaper():
    """Per query the LLM with the highest quality − λ·cost among those whose quality is known; an unknown (NaN)
    quality is never chosen; equal scores go to the LLM that is cheaper for that query."""
    from radialrouter.core.objective import COST_SCALE
    from radialrouter.routers._common import best_llm

    quality = np.array([[0.9, 0.5, np.nan], [0.2, 0.8, 0.8], [np.nan, 0.1, 0.3], [0.6, 0.6, 0.6]])
    cost = np.array([[2.0, 1.0, 0.1], [1.0, 3.0, 2.0], [1.0, 1.0, 1.0], [3.0, 1.0, 2.0]]) / COST_SCALE
    assert best_llm(quality, cost, 0.0).tolist() == [0, 2, 2, 1]
    # λ = 0.3: query 0 scores 0.3, 0.2 (NaN excluded); query 1: -0.1, -0.1, 0.2
    assert best_llm(quality, cost, 0.3).tolist() == [0, 2, 2, 1]
    assert best_llm(quality, cost, 1.0).tolist() == [1, 0, 2, 1]  # query 0: −1.1, −0.5; query 1: −0.8, −2.2, −1.2


def test_macro_score_averages_tasks_not_queries():
    """A routing choice's macro Score: Perf − λ·Cost (USD per 1,000 queries) per task, averaged over tasks, so a
    task with few queries counts as much as a large one."""
    from radialrouter.routers._common import macro_perf_cost, macro_score

    data = RoutingDataset.from_arrays(
        prompts=["a", "b", "c", "d"], llms=["x", "y"], tasks=["t1", "t1", "t1", "t2"],
        quality=np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
        cost=np.array([[0.001, 0.002], [0.001, 0.002], [0.001, 0.002], [0.004, 0.003]]))
    choice = np.array([0, 0, 0, 1])  # t1: perf 2/3, cost 1.0 per 1k; t2: perf 1, cost 3.0 per 1k
    assert macro_score(choice, data, 0.0) == pytest.approx((2 / 3 + 1) / 2)
    assert macro_score(choice, data, 0.1) == pytest.approx((2 / 3 - 0.1 + 1 - 0.3) / 2)
    perf, cost = macro_perf_cost(data.quality[np.arange(4), choice], data.cost[np.arange(4), choice], data.tasks)
    assert perf == pytest.approx(5 / 6) and cost == pytest.approx(2.0)


def test_out_of_fold_predictions_never_come_from_a_model_that_saw_the_row():
    """Every training row is predicted once, by a model fitted on the other folds only (so thresholds picked on the
    predictions are not fooled by over-confidence on training data); the folds are balanced and seeded."""
    from radialrouter.routers._common import out_of_fold

    x, y = np.arange(20, dtype=np.float64)[:, None], np.zeros(20)
    fitted: list[set] = []

    def fit(xs, ys):
        fitted.append(set(xs[:, 0].tolist()))
        return fitted[-1]

    def predict(xs, seen):
        return np.array([1.0 if v in seen else 0.5 + v / 100 for v in xs[:, 0]])

    out = out_of_fold(fit, predict, x, y, folds=4, seed=3)
    np.testing.assert_array_equal(out, 0.5 + np.arange(20) / 100)  # never 1.0: no row predicted by its own fit
    assert len(fitted) == 4 and all(len(s) == 15 for s in fitted)
    held = [set(range(20)) - s for s in fitted]
    assert set().union(*held) == set(range(20)) and sum(len(h) for h in held) == 20
    fitted.clear()
    out_of_fold(fit, predict, x, y, folds=4, seed=3)
    assert [set(range(20)) - s for s in fitted] == held  # the same seed: the same folds
    fitted.clear()
    out_of_fold(fit, predict, x, y, folds=4, seed=4)
    assert [set(range(20)) - s for s in fitted] != held


def test_threshold_grid_spans_accept_all_to_never():
    """Candidate thresholds: ``n`` quantiles of the scores, from the lowest (accept everything) to the highest,
    plus one above any probability (never accept), sorted and without repeats."""
    from radialrouter.routers._common import NEVER, quantile_grid

    grid = quantile_grid(np.array([0.9, 0.1, 0.5, 0.3, 0.7]), 5)
    np.testing.assert_allclose(grid, [0.1, 0.3, 0.5, 0.7, 0.9, NEVER])
    assert NEVER > 1.0
    np.testing.assert_allclose(quantile_grid(np.array([0.4, 0.4, 0.4]), 4), [0.4, NEVER])
    np.testing.assert_allclose(quantile_grid(np.linspace(0, 1, 101), 3), [0.0, 0.5, 1.0, NEVER])


def test_operating_points_are_selected_on_training_then_validation_rows():
    """Frugal-style routers select operating points on the training rows followed by the validation rows (labels
    only); without validation rows, on the training rows alone."""
    from radialrouter.routers._common import with_val

    ds = make_synthetic(n_queries=40, seed=1)
    train, test = ds.select("train"), ds.select("test")
    both = with_val(train, test)
    assert len(both) == len(train) + len(test) and both.llms == train.llms
    np.testing.assert_array_equal(both.quality, np.concatenate([train.quality, test.quality]))
    np.testing.assert_array_equal(both.cost, np.concatenate([train.cost, test.cost]))
    assert both.prompts.tolist() == [*train.prompts, *test.prompts]
    assert both.tasks.tolist() == [*train.tasks, *test.tasks]
    assert with_val(train, None) is train and with_val(train, ds.select("val")) is train


def test_scores_from_a_soft_labelled_scorer_follow_the_fractional_labels():
    """Fractional qualities (pass rates) are soft labels: two groups of queries labelled 0.8 and 0.2 get scorers
    predicting about 0.8 and 0.2 for them."""
    from radialrouter.routers._common import fit_soft_logistic, sigmoid

    x = np.repeat([[1.0, 0.0], [0.0, 1.0]], 30, axis=0)
    coef, intercept = fit_soft_logistic(x, np.repeat([0.8, 0.2], 30), c=1e4)
    p = sigmoid(x @ coef + intercept)
    np.testing.assert_allclose(p[:30], 0.8, atol=0.01)
    np.testing.assert_allclose(p[30:], 0.2, atol=0.01)
    coef, intercept = fit_soft_logistic(x, np.repeat([1.0, 0.0], 30), c=1e4)  # hard labels are soft labels too
    assert sigmoid(x[:1] @ coef + intercept)[0] > 0.99 and sigmoid(x[-1:] @ coef + intercept)[0] < 0.01
    assert sigmoid(np.array([-1e4, 0.0, 1e4])).tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_training_json_says_how_a_regressor_was_selected_and_fits_repeat(tmp_path):
    """A quality regressor trained with validation data records in training.json the steps run, the step kept and
    its validation figure, which is the mean macro Score over the named trade-offs of routing the validation rows
    (what ``val_score_is`` says); the same seed gives the same router."""
    from radialrouter.core.scoring import summarize
    from radialrouter.routers import from_pretrained

    ds = make_synthetic(n_queries=120, seed=4)
    train, val = ds.select("train"), ds.select("test")
    router = make_router("mlp", steps=120, hidden=16, seed=5).fit(train, val)
    router.save_pretrained(tmp_path / "mlp")
    record = json.loads((tmp_path / "mlp" / "training.json").read_text())
    lams = sorted(set(router.presets_.values()))
    assert record["val_score_is"] == "mean macro Score over λ = " + ", ".join(f"{lam:g}" for lam in lams)
    assert record["steps"] <= 120 and 0 < record["best_step"] <= record["steps"] and record["best_step"] % 50 in (
        0, record["steps"] % 50)
    rows = np.arange(len(val))
    routed = np.mean([summarize(val.quality[rows, c], val.cost[rows, c], val.tasks, lam)["macro"].score
                      for lam in lams for c in [router.predict(val, lam)]])
    assert record["best_val_score"] == pytest.approx(routed, abs=1e-9)
    again = make_router("mlp", steps=120, hidden=16, seed=5).fit(train, val)
    np.testing.assert_array_equal(again.predict_scores(val, 0.0), router.predict_scores(val, 0.0))
    loaded = from_pretrained(tmp_path / "mlp")
    np.testing.assert_allclose(loaded.predict_scores(val, 0.0), router.predict_scores(val, 0.0), atol=1e-6)


def test_a_warm_start_continues_from_the_given_router_and_refuses_another(tmp_path):
    """``init_from``: training starts from a fitted router's weights (no steps: the same predictions), and only a
    router of the same kind, LLMs and input width is accepted, with a message that says so."""
    ds = make_synthetic(n_queries=80, seed=6)
    train = ds.select("train")
    base = make_router("mlp", steps=60, hidden=8, seed=1).fit(train)
    warm = make_router("mlp", steps=0, hidden=8, seed=2)
    warm.init_from = base
    warm.fit(train)
    np.testing.assert_allclose(warm.predict_scores(train, 0.0), base.predict_scores(train, 0.0), atol=1e-6)
    cold = make_router("mlp", steps=0, hidden=8, seed=2).fit(train)
    assert not np.allclose(cold.predict_scores(train, 0.0), base.predict_scores(train, 0.0), atol=1e-3)
    other = make_synthetic(n_queries=80, n_llms=3, seed=6).select("train")
    for wrong in (make_router("mf", steps=5, seed=1).fit(train), make_router("mlp", steps=5, hidden=8).fit(other)):
        refused = make_router("mlp", steps=5, hidden=8)
        refused.init_from = wrong
        with pytest.raises(RouterError) as info:
            refused.fit(train)
        assert str(info.value) == (f"mlp: can only warm-start from a fitted 'mlp' router with the same LLMs "
                                   f"{refused.llms_} and {train.embeddings.shape[1]}-d inputs")


def test_a_regressor_trains_on_float64_embeddings_as_on_float32():
    """Embeddings a user attaches in double precision train and route the same as float32 ones."""
    ds = make_synthetic(n_queries=60, seed=7)
    train = ds.select("train")
    wide = dataclasses.replace(train, embeddings=train.embeddings.astype(np.float64))
    for name in ("mlp", "mf"):
        a = make_router(name, steps=10, seed=0).fit(train)
        b = make_router(name, steps=10, seed=0).fit(wide)
        np.testing.assert_allclose(b.predict_scores(train, 0.0), a.predict_scores(train, 0.0), atol=1e-6)
