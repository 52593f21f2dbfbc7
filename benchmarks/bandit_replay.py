"""Bandit replay: how close does a router learned from its own logged traffic — one revealed label per query —
get to one trained with every LLM's label (full information)?

    python benchmarks/bandit_replay.py                       # routerbench3 and mmlupro29, 5 seeds, curve to 10k
    python benchmarks/bandit_replay.py --datasets routerbench3 --seeds 0 --curve ""   # quicker
    python benchmarks/bandit_replay.py --report-only         # re-render the .md (after bandit_vw.py)

Per data set and seed, the data set's training queries (shuffled; the first ``--traffic`` of them) arrive as
traffic at λ = Balance. A logging policy routes each one and only the called LLM's quality is revealed (variant
*noisy judge*: flipped with probability ``--noise``, as a fallible LLM judge would). Every ``--every`` queries the
bandit learner (`LEARNER`, chosen on validation by `bandit_learner_select.py`: an ``mlp`` 64 units wide with the
masked loss of `radialrouter.learning.partial` and its pessimistic routing, costs imputed as in
`radialrouter.learning.ledger_data`; ``--learner`` picks another, the full-information reference staying `LEARNER`;
per-LLM ridge learners and a ridge-then-mlp size switch were tested against it on held-out folds of routerbench3's
training split, `bandit_serve_select.py --learners`, and it stayed)
is retrained on everything logged so far and becomes the new logging policy (``--prior``: blended with the frozen
router). Policies:

* ``frozen``: routerbench3 — the embedded router (RadialRouter, static encoder) as shipped (trained on the full
  information of routerbench3's training split); mmlupro29 — no embedded router knows its pool, so the learner
  trained on the ``--warm`` full-information training queries outside the traffic. It is the first logging policy
  of every variant.
* ``bandit, no exploration``: the learner's greedy choice is logged (propensity 1).
* ``bandit, exploring``: SquareCB's inverse-gap weighting (``--explore squarecb``, the default, chosen on
  validation by `bandit_explore_select.py`: each non-greedy LLM with probability 1 / (m + γ·gap), γ = 30·√t after
  t logged queries, the scale chosen by `bandit_serve_select.py` — the same function as ``router.explore``;
  ``--floor ε`` mixes in a uniform floor, (1 − ε)·p + ε/m, tested by `bandit_serve_select.py --floors`),
  ε-greedy (``--explore epsilon``: with probability ε a uniformly random LLM) or a softmax over the policy's
  scores with an ε/m floor (``--explore softmax``); the draw's propensity is logged.
  Which policy serves after a retrain (``--deploy``): ``always`` the new learner; ``ope`` the new learner only
  when off-policy evaluation of the most recent logged queries (held out from a check fit) rates it at least the
  frozen router, else the frozen router keeps serving, exploring around its choice (`deploy_learner`).
  ``--prior n0`` warm-starts serving from the shipped router: the served scores blend the frozen router's and the
  learner's, the learner's weight t / (t + n0) after t logged queries (`PriorBlend`; default 1,000, chosen by
  `bandit_serve_select.py`; 0: the learner alone). The serving settings (γ scale, ``--server``,
  ``--serve-every``, ``--serve-from``, ``--prior``) are chosen
  by `bandit_serve_select.py` by the Score served on a separate validation data set — llmrouter9's traffic under
  this replay's protocol, its test split the guard on learning — the protocol VW SquareCB's choice (b) follows
  (`bandit_vw.py`); no routerbench3 query informs them. (Before, they were chosen on `validation_stream`,
  routerbench3's 200 warm-start queries drawn into 2,000; its docstring says why that was replaced.)
  ``--server ridge``: what serves is not the learner but a per-LLM ridge regression on the same log
  (`SERVE_RIDGE`, the `ridge` router), refitted every ``--serve-every`` logged queries from query ``--serve-from``
  on (the shipped router before) — in the product, `radialrouter train --from-ledger --router ridge` and `promote`
  on that cadence; the learner (whose test Score is the curve and the gap) is still retrained every ``--every`` on
  the log. The default, chosen by `bandit_serve_select.py` (llmrouter9's traffic, guarded by the learner's gap on
  held-out folds of routerbench3's training split): ``--server learner`` — the learner serves, blended with the
  frozen router (``--prior 1000``); the ridge served by default before (every 250 from query 500, γ = 100·√t).
* ``bandit, exploring, noisy judge``: as above, labels flipped with probability ``--noise``.
* ``bandit, exploring, warm start``: as ``exploring``, trained on the ``--warm`` full-information queries too.
* ``full information``: the same learner trained on the same traffic queries with every LLM's label (the ceiling).

Test Score (macro over tasks, λ = 0.02, the data set's test split) is measured at every retrain. Off-policy
evaluation checks: on each block of traffic just logged with exploration, policies fixed before that block (the
frozen router, the previous full-information, no-exploration and ε-greedy learners) are evaluated with IPS, SNIPS
and DR (DR's model: the previous ε-greedy learner's quality and cost heads) and their 95 % bootstrap intervals
compared with the policy's true Score on the same queries.

Learning curve (``--curve``, default 1,000, 2,000, 5,000 and 10,000 logged queries): the exploring and
full-information variants only, without OPE, on a longer traffic stream — the training pool (the training split
less the warm-start queries: 2,005 queries of routerbench3, 7,027 of mmlupro29) in order, then replayed in passes,
each a fresh permutation (so 10,000 queries are ~5 passes on routerbench3, ~1.4 on mmlupro29). Its first 2,000
queries and label draws are those of the main run (one random stream per variant), so its 2,000 point equals the
main run's. Reported per size: the gap to full information and the Score served while logging (queries 1..n).
VW's figures (`vw`) come from benchmarks/results/bandit_vw.json, written by `bandit_vw.py`.
Writes benchmarks/results/bandit_replay.{json,md,png}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from radialrouter.core.objective import COST_SCALE
from radialrouter.data import load_splits
from radialrouter.data.dataset import RoutingDataset
from radialrouter.evaluation import summarize
from radialrouter.learning.exploration import squarecb_gamma, squarecb_probs
from radialrouter.learning.ledger_data import LoggedTraffic, concat_datasets, impute_costs
from radialrouter.learning.ope import bootstrap_counts, evaluate
from radialrouter.routers import Router, router_class
from radialrouter.routers.radial import load_default

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
LAM = 0.02
EXPLORING = "bandit, exploring"
VARIANTS = ("full information", EXPLORING, "bandit, exploring, noisy judge", "bandit, no exploration",
            "bandit, exploring, warm start")


#: the data sets that log quality only: their costs are estimates (`radialrouter.data.prices`: list prices from
#: prices.json × prompt tokens counted with the bundled MiniLM WordPiece tokenizer + 256 output tokens per query)
PRICED = ("mmlupro29", "llmrouter9")
#: the data set the serving settings (ours, `bandit_serve_select.py`, and VW SquareCB's (b), `bandit_vw.py`) are
#: chosen on; the replay itself never reads it
VALIDATION = "llmrouter9"


def load(name: str, seed: int, encoder) -> tuple[RoutingDataset, RoutingDataset]:
    """(training split, test split) of a shared data set, embedded. routerbench3 logs its costs; mmlupro29 and
    llmrouter9 (`PRICED`) get estimated ones (list price × token estimate, see `PRICED`); llmrouter9 keeps its
    source's own train/test split, mmlupro29 gets the loader's seeded one."""
    prices = SHARED / "prices.json" if name in PRICED else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows with a missing quality: excluded, as in the published report
        _, train, _, test = load_splits(SHARED / f"{name}.parquet", seed=0, val_size=0, prices=prices,
                                        missing="exclude")
    return train.embed(encoder, progress=False), test.embed(encoder, progress=False)


def test_score(router: Router, test: RoutingDataset) -> float:
    choice = router.predict(test, LAM)
    rows = np.arange(len(test))
    return float(summarize(test.quality[rows, choice], test.cost[rows, choice], test.tasks, LAM)["macro"].score)


#: the learner, chosen on validation by `benchmarks/bandit_learner_select.py` (each seed's warm-start queries,
#: never the test split): a router name, its constructor parameters, ``steps`` (overrides ``--steps``) and
#: ``pessimism`` (set on the instance, for the torch regressors). It is also the full-information reference of
#: every gap (whatever ``--learner`` the bandit-fed learner is, as in VW's comparison, `bandit_vw.py`) and
#: mmlupro29's frozen router.
LEARNER: dict = {"router": "mlp", "hidden": 64}
LEARNER_NAME = "mlp (masked loss, hidden 64)"

#: named learner specs for ``--learner`` (the bandit-fed learner; `bandit_serve_select.py --learners` declares its
#: candidates with them). A spec with ``switch_at`` is a size switch: ``below`` fitted on fewer than ``switch_at``
#: logged queries, ``from`` on more — a linear model is the more sample-efficient with few labels per LLM, the
#: ``mlp`` may fit better with many (issue #26).
LEARNER_PRESETS: dict[str, dict] = {
    "mlp64": LEARNER,
    "ridge1": {"router": "ridge", "alpha": 1.0, "pessimism": 0.0},
    "ridge10": {"router": "ridge", "alpha": 10.0, "pessimism": 0.0},
    "ridge100": {"router": "ridge", "alpha": 100.0, "pessimism": 0.0},
    "ridge10-then-mlp64-at-5000": {"switch_at": 5000, "below": {"router": "ridge", "alpha": 10.0, "pessimism": 0.0},
                                   "from": LEARNER},
}
#: ``--learner``'s default: the bandit-fed learner of the replay; `bandit_serve_select.py --learners` (issue #26,
#: held-out folds of the training split, seeds 0-9, rule declared before any figure) kept it against the ridges
#: and the size switch above
BANDIT_LEARNER = "mlp64"


def learner_spec(value: str | dict | None) -> dict:
    """The spec of ``--learner``: a `LEARNER_PRESETS` name, a JSON object (`LEARNER`'s format, or a size switch),
    or None (`LEARNER`)."""
    if value is None:
        return LEARNER
    if isinstance(value, dict):
        return value
    if value in LEARNER_PRESETS:
        return LEARNER_PRESETS[value]
    try:
        spec = json.loads(value)
    except json.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict) or not ("router" in spec or "switch_at" in spec):
        raise ValueError(f"--learner: {value!r} is neither a preset ({', '.join(LEARNER_PRESETS)}) nor a JSON "
                         "learner spec")
    return spec


def learner_name(spec: dict) -> str:
    """A learner spec in words (the reports' learner)."""
    if spec == LEARNER:
        return LEARNER_NAME
    if "switch_at" in spec:
        return (f"{learner_name(spec['below'])} below {spec['switch_at']:,} logged queries, "
                f"{learner_name(spec['from'])} from then on")
    params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in spec.items()
                       if k != "router")
    return f"{spec['router']} ({params})" if params else spec["router"]


def make_learner(spec: dict) -> Callable[..., Router]:
    """A factory ``(steps, seed, logged=None) -> unfitted router`` for a learner spec (see `LEARNER`).
    ``logged``: the number of logged queries it is about to be fitted on, which a size switch (``switch_at``)
    needs to pick its learner; plain specs ignore it."""
    if "switch_at" in spec:
        below, above = make_learner(spec["below"]), make_learner(spec["from"])

        def switch(steps: int, seed: int, logged: int | None = None) -> Router:
            if logged is None:
                raise ValueError("a size-switching learner needs the number of logged queries it is fitted on")
            return (below if logged < spec["switch_at"] else above)(steps, seed, logged)
        return switch

    def make(steps: int, seed: int, logged: int | None = None) -> Router:
        params = {k: v for k, v in spec.items() if k not in ("router", "steps", "pessimism")}
        cls = router_class(spec["router"])
        if "steps" in inspect.signature(cls.__init__).parameters:
            params = {"steps": spec.get("steps", steps), "seed": seed, **params}
        router = cls(**params)
        if "pessimism" in spec and "pessimism" not in params:
            router.pessimism = spec["pessimism"]
        return router
    return make


def learner(steps: int, seed: int, logged: int | None = None) -> Router:
    """The reference learner (`LEARNER`), unfitted."""
    return make_learner(LEARNER)(steps, seed)


def quality_model(router: Router, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A router's own (quality, cost) predictions for DR, when it has a quality model (not RadialRouter)."""
    if hasattr(router, "_quality"):
        return router._quality(x), router.predict_costs(x)
    if hasattr(router, "_neighbour_means"):
        return router._neighbour_means(x)
    return None


def fit_bandit(traffic: RoutingDataset, action: np.ndarray, label: np.ndarray, prior_cost: np.ndarray, steps: int,
               seed: int, warm: RoutingDataset | None = None, make: Callable[[int, int], Router] = learner,
               impute: Router | None = None) -> Router:
    """The masked-loss learner on the logged rows (one label per row, costs imputed for the other LLMs), plus the
    full-information ``warm`` rows when given. ``impute`` (``--impute-frozen``: the shipped router): the unrevealed
    quality cells are filled from it — its implied quality differences to the called LLM added to that LLM's
    revealed label, clipped to [0, 1] (`implied_quality`) — a warm start of the learner itself."""
    n, m = len(traffic), traffic.n_llms
    rows = np.arange(n)
    quality = np.full((n, m), np.nan)
    quality[rows, action] = label
    if impute is not None:
        implied = implied_quality(impute, traffic.embeddings)
        filled = np.clip(label[:, None] + implied - implied[rows, action][:, None], 0.0, 1.0)
        quality = np.where(np.isnan(quality), filled, quality)
    cost = impute_costs(action, traffic.cost[rows, action], m, prior_cost)
    ds = RoutingDataset.from_arrays(traffic.prompts.tolist(), quality, traffic.llms, cost=cost,
                                    tasks=traffic.tasks.tolist(), split=["train"] * n, source="replay-log")
    ds = ds.with_embeddings(traffic.embeddings, traffic.embedding_encoder)
    if warm is not None:
        ds = concat_datasets(warm, ds)
    return make(steps, seed, logged=n).fit(ds)


def logging_probs(scores: np.ndarray, greedy: np.ndarray, block: np.ndarray, explore: bool, args) -> np.ndarray:
    """The logging policy's (rows, m) probabilities on a block of traffic (``block``: the queries' positions in
    the traffic, which SquareCB's γ schedule counts): greedy without exploration, else ``args.explore``."""
    n, m = scores.shape
    rows = np.arange(n)
    if not explore:
        probs = np.zeros((n, m))
        probs[rows, greedy] = 1.0
        return probs
    if args.explore == "squarecb":  # inverse-gap weighting, γ = gamma_scale · t^gamma_exponent (or fixed)
        gamma = np.array([squarecb_gamma(int(t) + 1, args.gamma, args.gamma_scale, args.gamma_exponent)
                          for t in block])
        # --floor ε: (1 − ε)·p_SquareCB + ε/m, so the log (and the propensities the learner and OPE read) keeps
        # labels on every LLM as γ grows; 0: plain SquareCB, the same array
        return squarecb_probs(scores, gamma, best=greedy, floor=getattr(args, "floor", 0.0))
    eps = args.epsilon
    probs = np.full((n, m), eps / m)
    if args.explore == "softmax":  # softmax over the policy's scores, ε/m floor everywhere
        z = scores / args.temperature
        z = np.exp(z - z.max(1, keepdims=True))
        probs += (1 - eps) * z / z.sum(1, keepdims=True)
    else:
        probs[rows, greedy] += 1 - eps
    return probs


def logged_traffic(traffic: RoutingDataset, rows: np.ndarray, probs: np.ndarray, action: np.ndarray,
                   label: np.ndarray) -> LoggedTraffic:
    """The replay's log of ``rows`` (``probs``, ``action``, ``label``: per row of ``rows``) as `LoggedTraffic`."""
    k = len(rows)
    return LoggedTraffic(request_ids=traffic.ids[rows], prompts=traffic.prompts[rows], llms=list(traffic.llms),
                         candidates=np.ones((k, traffic.n_llms), bool), probs=probs, action=action, reward=label,
                         cost=traffic.cost[rows, action], lam=np.full(k, LAM),
                         router_version=np.full(k, "", object), label_source=np.full(k, "", object))


def implied_quality(router: Router, x: np.ndarray) -> np.ndarray:
    """A router's implied quality per LLM, up to a per-query constant: its Score estimate (RadialRouter: τ·log p̂,
    p = softmax(Score / τ); a regressor: q̂ − λ·cost) plus λ·COST_SCALE times its predicted cost."""
    scale = float(router.target_tau()) if hasattr(router, "target_tau") else 1.0
    return scale * router.predict_scores(x, LAM) + LAM * COST_SCALE * router.predict_costs(x)


class PriorBlend:
    """A serving policy that warm-starts from the shipped router: per LLM the score
    ``(1 − w)·τ·log p̂_frozen + w·learner score`` with ``w = t / (t + prior)`` after t logged queries — the frozen
    router counts as a prior worth ``prior`` logged queries, and the learner takes over as its labels accumulate.
    RadialRouter's scores are log p̂ with p = softmax(Score / τ), so τ·log p̂ estimates each LLM's Score up to a
    per-query constant, which neither the argmax nor SquareCB's gaps see; a learner's scores are Score estimates."""

    def __init__(self, frozen: Router, learner: Router, weight: float) -> None:
        self.frozen, self.learner, self.weight = frozen, learner, float(weight)
        self.scale = float(frozen.target_tau()) if hasattr(frozen, "target_tau") else 1.0

    def predict_scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        return ((1.0 - self.weight) * self.scale * self.frozen.predict_scores(x, lam)
                + self.weight * self.learner.predict_scores(x, lam))

    def predict(self, x: np.ndarray, lam: float) -> np.ndarray:
        return self.predict_scores(x, lam).argmax(1)


#: the serving learner of ``--server ridge``: per-LLM ridge regression (`radialrouter.routers.ridge`), its
#: ``alpha`` and ``pessimism`` chosen by its own bandit-fed Score on the validation queries (bandit_serve_select.py's
#: RIDGE_GRID); cheap enough to refit every ``--serve-every`` logged queries.
SERVE_RIDGE: dict = {"router": "ridge", "alpha": 10.0, "pessimism": 1.0}


def serving_learner(args) -> Callable[[int, int], Router] | None:
    """The factory of the policy that serves between the learner's retrains (``--server``): None — the learner
    itself serves (``learner``); the `SERVE_RIDGE` ridge (``ridge``), refitted every ``--serve-every``."""
    if getattr(args, "server", "learner") == "ridge":
        return make_learner(getattr(args, "serve_spec", None) or SERVE_RIDGE)
    return None


def serving_policy(frozen: Router, fitted: Router, s: dict, args, n_seen: int):
    """What serves after a (re)fit on ``n_seen`` logged queries: ``fitted``, or with ``--prior`` its `PriorBlend`
    with the frozen router."""
    prior_n = getattr(args, "prior", 0.0)
    return fitted if not prior_n else PriorBlend(frozen, fitted, n_seen / (n_seen + prior_n))


def deploy_learner(traffic: RoutingDataset, s: dict, seen: np.ndarray, frozen: Router, prior: np.ndarray, args,
                   seed: int, warm: RoutingDataset | None, make: Callable[[int, int], Router]) -> bool:
    """``--deploy ope``: should the learner just retrained on ``seen`` replace the shipped (frozen) router as the
    serving policy? The most recent ``--deploy-holdout`` share of the logged queries is held out, a learner of the
    same kind is fitted on the rest, and both it and the frozen router are evaluated on the held-out log with the
    doubly robust estimator (`radialrouter.learning.ope.evaluate`; its model: that learner's quality and cost
    heads; the logged propensities make it unbiased whatever the model). Yes when the learner's estimated Score is
    at least the frozen router's. Only the log is read — the labels the gateway itself revealed."""
    n_hold = max(1, int(round(len(seen) * args.deploy_holdout)))
    fit_rows, hold = seen[:-n_hold], seen[-n_hold:]
    if len(fit_rows) == 0:
        return False
    check = fit_bandit(traffic.subset(fit_rows), s["action"][fit_rows], s["label"][fit_rows], prior, args.steps,
                       seed, warm, make)
    xh = traffic.embeddings[hold]
    log = logged_traffic(traffic, hold, s["probs"][hold], s["action"][hold], s["label"][hold])
    dm = quality_model(check, xh)
    q_hat, c_hat = (None, None) if dm is None else dm
    counts = bootstrap_counts(len(hold), 1, seed)
    est = "dr" if q_hat is not None else "snips"
    values = [evaluate(log, policy.predict(xh, LAM), lam=LAM, q_hat=q_hat, c_hat=c_hat, counts=counts)
              .estimates[est]["score"]["value"] for policy in (check, frozen)]
    return bool(values[0] >= values[1])


def run_replay(name: str, traffic: RoutingDataset, warm: RoutingDataset, test: RoutingDataset | None,
               frozen: Router, seed: int, args, variants: tuple[str, ...] = VARIANTS,
               make: Callable[..., Router] | None = None, learn_at: tuple[int, ...] | None = None,
               full_make: Callable[..., Router] = learner) -> dict:
    """One replay of ``traffic``. ``test`` None (`bandit_serve_select.py`'s reference runs): no test
    Scores, only what was served. ``args.deploy``: which policy serves after a retrain — ``always`` the new
    learner, ``ope`` the new learner only when `deploy_learner` says so, else the frozen router (exploring
    variants; without exploration the log has no propensities to evaluate with, and the learner always serves).
    ``learn_at`` (`bandit_serve_select.py`'s held-out-fold guard; None: every checkpoint): with ``--server ridge``
    and no OPE the learner neither serves nor is read between checkpoints, so it is retrained and scored only at
    these (its curve is NaN at the others); nothing else changes, as each fit seeds itself. ``make``: the bandit-fed
    learner's factory (None: ``args.learner``, `learner_spec`); ``full_make``: the full-information variant's
    (the reference `LEARNER`, so that every bandit-fed learner's gap is to the same ceiling)."""
    if make is None:
        make = make_learner(learner_spec(getattr(args, "learner", None)))
    n, m = len(traffic), traffic.n_llms
    x = traffic.embeddings
    true_score = traffic.quality - LAM * COST_SCALE * traffic.cost  # (n, m)
    prior = frozen.mean_cost_
    checkpoints = list(range(args.every, n + 1, args.every))
    # the serving policy's refit points (``--serve-every``, default ``--every``): with ``--server ridge`` the
    # ridge that serves is refitted on these, the learner (whose test Score is the curve) on ``checkpoints``
    serve_make = serving_learner(args)
    serve_every = (getattr(args, "serve_every", None) or args.every) if serve_make is not None else args.every
    serve_from = getattr(args, "serve_from", None) or serve_every  # the shipped router serves before this
    refits = sorted({t for t in range(serve_every, n + 1, serve_every) if t >= serve_from} | set(checkpoints))
    curves: dict[str, list[float]] = {v: [] for v in variants}
    frozen_score = test_score(frozen, test) if test is not None else None
    state = {v: {"policy": frozen, "serving": frozen, "action": np.zeros(n, np.int64), "label": np.zeros(n),
                 "prob": np.zeros(n), "probs": np.zeros((n, m)), "deployed": []}
             for v in variants if v != "full information"}
    full_policy: Router | None = None
    served = {v: [] for v in state}
    checks: list[dict] = []
    # one stream per variant, so a variant's log does not depend on which other variants run alongside it
    rngs = {v: np.random.default_rng([2000 + seed, VARIANTS.index(v)]) for v in state}
    start, learn_start = 0, 0
    block_served = {v: [] for v in state}  # (queries, served Score sum) of the serving blocks since the last checkpoint
    for t in refits:
        block = np.arange(start, t)
        for v, s in state.items():
            scores = s["serving"].predict_scores(x[block], LAM)
            greedy = s["serving"].predict(x[block], LAM)
            probs = logging_probs(scores, greedy, block, v != "bandit, no exploration", args)
            label_rng = rngs[v]
            u = label_rng.random(len(block))
            action = np.minimum((probs.cumsum(1) < u[:, None]).sum(1), m - 1)
            quality = traffic.quality[block, action]
            if v.endswith("noisy judge"):
                flip = label_rng.random(len(block)) < args.noise
                quality = np.where(flip, 1.0 - quality, quality)
            s["action"][block], s["label"][block], s["probs"][block] = action, quality, probs
            block_served[v].append(float(true_score[block, action].sum()))
        start = t
        if t not in checkpoints:  # a serving refit only (``--serve-every``): refit the serving ridge, go on
            seen = np.arange(t)
            for v, s in state.items():
                if s["deployed"] and not s["deployed"][-1]:  # --deploy ope kept the frozen router at the last check
                    continue
                v_warm = warm if v.endswith("warm start") else None
                fitted = fit_bandit(traffic.subset(seen), s["action"][seen], s["label"][seen], prior, args.steps,
                                    seed, v_warm, serve_make)
                s["serving"] = serving_policy(frozen, fitted, s, args, len(seen))
            continue
        for v in state:
            served[v].append(float(np.sum(block_served[v]) / (t - learn_start)))
            block_served[v] = []
        block = np.arange(learn_start, t)  # the OPE checks read the whole block since the last checkpoint
        learn_start = t
        # OPE on the block just logged with exploration, for policies fixed before it (``--boot 0``: none)
        log = state[EXPLORING]
        ope_targets = args.boot > 0 and "bandit, no exploration" in state
        logged = logged_traffic(traffic, block, log["probs"][block], log["action"][block], log["label"][block])
        targets = {"frozen": frozen, "previous exploring learner": log["policy"]} if ope_targets else {}
        if full_policy is not None and ope_targets:
            targets["previous full-information learner"] = full_policy
        if ope_targets and state["bandit, no exploration"]["policy"] is not frozen:
            targets["previous no-exploration learner"] = state["bandit, no exploration"]["policy"]
        dm = quality_model(log["policy"], x[block]) if targets else None
        q_hat, c_hat = (None, None) if dm is None else dm
        counts = bootstrap_counts(len(block), args.boot, seed + t)
        for target_name, policy in targets.items():
            actions = policy.predict(x[block], LAM)
            truth = float(true_score[block, actions].mean())
            result = evaluate(logged, actions, lam=LAM, q_hat=q_hat, c_hat=c_hat, counts=counts)
            for est, metrics in result.estimates.items():
                e = metrics["score"]
                checks.append({"dataset": name, "seed": seed, "queries": t, "target": target_name, "estimator": est,
                               "estimate": e["value"], "low": e["low"], "high": e["high"], "truth": truth,
                               "covered": bool(e["low"] <= truth <= e["high"]), "warned": bool(result.warnings),
                               "ess": result.diagnostics["ess"]})
        # retrain every learner on what it logged so far
        seen = np.arange(t)
        skip = learn_at is not None and serve_make is not None and not targets and t not in learn_at
        for v, s in state.items():
            v_warm = warm if v.endswith("warm start") else None
            s["policy"] = s["policy"] if skip else fit_bandit(
                traffic.subset(seen), s["action"][seen], s["label"][seen], prior, args.steps, seed, v_warm, make,
                frozen if getattr(args, "impute_frozen", False) else None)
            fitted = s["policy"] if serve_make is None else fit_bandit(
                traffic.subset(seen), s["action"][seen], s["label"][seen], prior, args.steps, seed, v_warm, serve_make)
            gated = getattr(args, "deploy", "always") == "ope" and v != "bandit, no exploration"
            use = not gated or deploy_learner(traffic, s, seen, frozen, prior, args, seed, v_warm,
                                              serve_make or make)
            s["serving"] = serving_policy(frozen, fitted, s, args, len(seen)) if use else frozen
            s["deployed"].append(bool(use))
            if test is not None:
                curves[v].append(float("nan") if skip else test_score(s["policy"], test))
        if "full information" in curves:
            full_policy = full_make(args.steps, seed, logged=t).fit(traffic.subset(seen))
            curves["full information"].append(test_score(full_policy, test))
        if test is not None:
            print(f"  {name} seed {seed} at {t}: " + ", ".join(f"{v} {c[-1]:.4f}" for v, c in curves.items()),
                  flush=True)
    frozen_served = float(true_score[np.arange(n), frozen.predict(x, LAM)].mean())  # greedy, no learning
    return {"checkpoints": checkpoints, "frozen": frozen_score, "frozen_served": frozen_served, "curves": curves,
            "served_score": {v: float(np.average(s, weights=np.diff([0] + checkpoints))) for v, s in served.items()},
            "served_blocks": served, "checks": checks, "deployed": {v: s["deployed"] for v, s in state.items()},
            "log": {k: state[EXPLORING][k] for k in ("action", "label", "probs")} if EXPLORING in state else None}


def traffic_order(n_train: int, n_traffic: int, n_warm: int, seed: int,
                  protocol: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(traffic rows, warm-start rows) of a seed: the training split shuffled; the warm-start queries are the
    ``n_warm`` after the first ``protocol`` (as in every earlier run), the traffic the rest in that order, replayed
    in further passes (each a fresh permutation of the pool) when ``n_traffic`` exceeds it."""
    order = np.random.default_rng(1000 + seed).permutation(n_train)
    cut = min(protocol, n_train - n_warm)
    warm = order[cut: cut + n_warm]
    pool = np.concatenate([order[:cut], order[cut + n_warm:]])
    rng, parts, have = np.random.default_rng(3000 + seed), [pool], len(pool)
    while have < n_traffic:
        parts.append(rng.permutation(pool))
        have += len(pool)
    return np.concatenate(parts)[:n_traffic], warm


def validation_traffic(data: RoutingDataset, n_traffic: int, n_warm: int, seed: int
                       ) -> tuple[RoutingDataset, RoutingDataset]:
    """(traffic, warm-start queries) of a seed on the validation data set's training split (`VALIDATION`), under
    the replay's protocol (`traffic_order`): what serving settings — ours and VW's (b) — are chosen on."""
    order, warm_rows = traffic_order(len(data), n_traffic, n_warm, seed)
    return data.subset(order[:n_traffic]), data.subset(warm_rows)


def validation_stream(warm_rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The older validation traffic stream of a seed (superseded; `bandit_serve_select.py --protocol stream` still
    runs it): ``n`` draws with replacement from the seed's warm-start queries (`traffic_order`'s ``warm``: full
    information, outside the traffic and the test split). Serving settings (ours and VW SquareCB's choice (b)) are
    now chosen on a separate data set, llmrouter9's traffic under this replay's protocol (`bandit_serve_select.py`,
    `bandit_vw.py`); this stream was dropped — after the ridge server's traffic figures had been seen — because each
    of its queries recurs ~n/200 (~10) times, which rewards memorising (every serving candidate served 0.78-0.82 on
    it), and its guard measured the learner on the same 200 queries only.

    Why these queries: routerbench3's training split is 2,205 queries and the 2,000-query traffic takes all but 205
    of them (the 200 warm-start queries and 5 more); a held-out part of the training split large enough for a
    2,000-query stream would have to come out of the traffic (changing the evaluation traffic) and another seed's
    traffic is the same queries in another order. The warm-start queries are already what every earlier choice
    (learner, VW's settings) was made on. The stream has the traffic's length, so γ schedules (functions of the
    queries seen) and the retraining cadence play out as on the traffic. Its cost: each query recurs ~n/200 times,
    so a learner that memorises is rewarded more than on the traffic — for VW and for ours alike, as both ran on
    the very same stream (same rows per seed)."""
    rng = np.random.default_rng(5000 + seed)
    return np.asarray(warm_rows)[rng.integers(0, len(warm_rows), n)]


def std_err(values: list[float]) -> float | None:
    """Standard error of a mean over seeds (None with one seed)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def learning_curve(rs: list[dict], sizes: list[int]) -> list[dict]:
    """Gap to full information and Score served while logging at each logged-query count, mean ± s.e. over seeds."""
    out = []
    for n in sizes:
        gaps, served = [], []
        for r in rs:
            i = r["checkpoints"].index(n)
            gaps.append(r["curves"]["full information"][i] - r["curves"][EXPLORING][i])
            w = np.diff([0] + r["checkpoints"][: i + 1])
            served.append(float(np.average(r["served_blocks"][EXPLORING][: i + 1], weights=w)))
        out.append({"logged": n, "gap": float(np.mean(gaps)), "gap_se": std_err(gaps),
                    "served_score": float(np.mean(served)), "served_score_se": std_err(served),
                    "full_information": float(np.mean([r["curves"]["full information"][r["checkpoints"].index(n)]
                                                       for r in rs])),
                    "bandit": float(np.mean([r["curves"][EXPLORING][r["checkpoints"].index(n)] for r in rs])),
                    "gap_per_seed": gaps, "served_per_seed": served})
    return out


def targets(result: dict) -> dict:
    """The issue's acceptance targets, checked on the result (None where a figure is missing). The served target
    compares with VW SquareCB at its setting chosen on validation by the serving criterion (`bandit_vw.py`'s
    choice (b): the best served Score on llmrouter9's traffic, the protocol our serving settings are chosen by);
    the difference is paired by seed (same traffic per seed)."""
    curve = {c["logged"]: c for c in result.get("learning_curve") or []}
    big = curve.get(max(curve)) if curve else None
    vw, gap = result.get("vw") or {}, result.get("final_gap_to_full_information")
    rb3 = result.get("summary", {}).get("routerbench3", {})
    served = rb3.get("served_score", {}).get(EXPLORING)
    served_target = None
    if vw and served is not None:
        ours_seeds = rb3.get("served_per_seed", {}).get(EXPLORING)
        vw_seeds = vw.get("served_score_per_seed")
        diff = (np.subtract(ours_seeds, vw_seeds).tolist()
                if ours_seeds and vw_seeds and len(ours_seeds) == len(vw_seeds) else None)
        after = rb3.get("served_after_first_block_per_seed", {}).get(EXPLORING)
        served_target = {"ours": served, "ours_se": rb3.get("served_score_se", {}).get(EXPLORING),
                         "ours_after_first_block": None if not after else float(np.mean(after)),
                         "ours_after_first_block_se": None if not after else std_err(after),
                         "vw_squarecb_after_first_block": vw.get("served_score_after_first_block"),
                         "vw_squarecb_after_first_block_se": vw.get("served_score_after_first_block_se"),
                         "vw_squarecb": vw["served_score"], "vw_squarecb_se": vw.get("served_score_se"),
                         "vw_setting": vw.get("served_score_setting"), "vw_choice": vw.get("served_score_choice"),
                         "difference": None if diff is None else float(np.mean(diff)),
                         "difference_se": None if diff is None else std_err(diff),
                         "met": bool(served >= vw["served_score"])}
    return {"gap_at_largest_logged_below_0.01": None if big is None else
            {"logged": big["logged"], "gap": big["gap"], "gap_se": big["gap_se"], "met": bool(big["gap"] <= 0.01)},
            "gap_at_2000_at_most_vw_best": None if not vw or gap is None else
            {"ours": gap, "vw_best": vw["final_gap"], "met": bool(gap <= vw["final_gap"])},
            "served_at_2000_at_least_vw_squarecb": served_target}


def vw_summary() -> dict | None:
    """VW's figures at the replay's protocol, from benchmarks/results/bandit_vw.json (written by bandit_vw.py),
    when it has been run."""
    path = RESULTS / "bandit_vw.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("vw")


#: the reference run of serving by a ridge (`--server ridge`; not chosen on validation), written with
#: ``python benchmarks/bandit_replay.py --datasets routerbench3 --curve "" --boot 0 --server ridge --serve-every 100
#: --serve-from 500 --gamma-scale 30 --out benchmarks/results/bandit_replay_ridge_server``
RIDGE_SERVER_REFERENCE = "bandit_replay_ridge_server"


def ridge_server_reference() -> dict | None:
    """Served Scores and gap of the ridge-server reference run (`RIDGE_SERVER_REFERENCE`), when it exists."""
    path = RESULTS / f"{RIDGE_SERVER_REFERENCE}.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    s, st = r["summary"]["routerbench3"], r["settings"]
    served, after = s["served_per_seed"][EXPLORING], s["served_after_first_block_per_seed"][EXPLORING]
    gaps = s["final_gap_per_seed"]
    return {"file": f"{RIDGE_SERVER_REFERENCE}.json",
            "label": f"ridge refitted every {st['serve_every']} from query {st['serve_from']}, squarecb "
                     f"γ = {st['gamma_scale']:g}·√t",
            "served": float(np.mean(served)), "served_se": std_err(served), "served_after": float(np.mean(after)),
            "served_after_se": std_err(after), "gap": float(np.mean(gaps)), "gap_se": std_err(gaps),
            "served_per_seed": served, "gap_per_seed": gaps}


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rs in runs.items():
        checkpoints = rs[0]["checkpoints"]
        curves = {v: {"mean": np.mean([r["curves"][v] for r in rs], 0).tolist(),
                      "std": np.std([r["curves"][v] for r in rs], 0).tolist()} for v in VARIANTS}
        out[name] = {"checkpoints": checkpoints, "frozen": float(np.mean([r["frozen"] for r in rs])),
                     "frozen_served": float(np.mean([r["frozen_served"] for r in rs])),
                     "frozen_served_se": std_err([r["frozen_served"] for r in rs]),
                     "curves": curves,
                     "served_score": {v: float(np.mean([r["served_score"][v] for r in rs]))
                                      for v in rs[0]["served_score"]},
                     "served_per_seed": {v: [r["served_score"][v] for r in rs] for v in rs[0]["served_score"]},
                     # queries after the first retrain (501-2,000 at the defaults): what the learned policy served,
                     # without the first block, which the shipped router serves
                     "served_after_first_block_per_seed": {v: [served_after_first_block(r, v) for r in rs]
                                                           for v in rs[0]["served_score"]},
                     "deployed_per_seed": {v: [r["deployed"][v] for r in rs] for v in rs[0]["served_score"]},
                     "served_score_se": {v: float(np.std([r["served_score"][v] for r in rs], ddof=1)
                                                  / np.sqrt(len(rs))) if len(rs) > 1 else None
                                         for v in rs[0]["served_score"]},
                     "final_se": {v: float(np.std([r["curves"][v][-1] for r in rs], ddof=1) / np.sqrt(len(rs)))
                                  if len(rs) > 1 else None for v in VARIANTS},
                     "final": {v: float(curves[v]["mean"][-1]) for v in VARIANTS},
                     "final_gap_per_seed": [r["curves"]["full information"][-1] - r["curves"][EXPLORING][-1]
                                            for r in rs],
                     "final_gap_warm_start_per_seed": [r["curves"]["full information"][-1]
                                                       - r["curves"]["bandit, exploring, warm start"][-1] for r in rs]}
    return out


def served_after_first_block(r: dict, variant: str) -> float:
    """The true Score served on the queries after the first retrain (the first ``--every`` are the shipped
    router's), from a run's per-checkpoint served Scores."""
    w = np.diff([0] + r["checkpoints"])
    return float(np.average(r["served_blocks"][variant][1:], weights=w[1:]))


def coverage(checks: list[dict]) -> dict:
    def share(rows: list[dict]) -> dict:
        return {"checks": len(rows), "covered": float(np.mean([c["covered"] for c in rows])) if rows else None}

    by_est = {}
    for est in ("ips", "snips", "dr"):
        rows = [c for c in checks if c["estimator"] == est]
        by_est[est] = {"all": share(rows), "no_overlap_warning": share([c for c in rows if not c["warned"]]),
                       "overlap_warning": share([c for c in rows if c["warned"]])}
    return {"all": share(checks), "no_overlap_warning": share([c for c in checks if not c["warned"]]),
            "by_estimator": by_est}


def plot(summary: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4), squeeze=False)
    for ax, (name, s) in zip(axes[0], summary.items()):
        xs = s["checkpoints"]
        ax.axhline(s["frozen"], color="grey", linestyle="--", label="frozen")
        for v in VARIANTS:
            mean, std = np.array(s["curves"][v]["mean"]), np.array(s["curves"][v]["std"])
            ax.plot(xs, mean, marker="o", label=v)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        ax.set_title(f"{name}: test Score at Balance (λ = {LAM})")
        ax.set_xlabel("logged queries")
        ax.set_ylabel("test Score (macro)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def replay_parser() -> argparse.ArgumentParser:
    """The replay's command line (`bandit_vw.py` reproduces its defaults: ``replay_parser().parse_args([])``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="routerbench3,mmlupro29")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--traffic", type=int, default=2000, help="logged queries per run")
    parser.add_argument("--every", type=int, default=500, help="retrain every this many queries")
    parser.add_argument("--warm", type=int, default=200, help="full-information queries outside the traffic "
                        "(warm-start variant; mmlupro29's frozen router)")
    parser.add_argument("--epsilon", type=float, default=0.3, help="ε of ε-greedy (the floor with softmax)")
    parser.add_argument("--explore", choices=("epsilon", "softmax", "squarecb"), default="squarecb")
    parser.add_argument("--gamma", type=float, default=None, help="SquareCB's fixed γ (default: the schedule)")
    parser.add_argument("--gamma-scale", type=float, default=30.0,
                        help="SquareCB: γ = scale · t^exponent (default chosen by bandit_serve_select.py)")
    parser.add_argument("--gamma-exponent", type=float, default=0.5)
    parser.add_argument("--floor", type=float, default=0.0,
                        help="SquareCB: uniform exploration floor ε in [0, 1), logged probabilities "
                             "(1 − ε)·p_SquareCB + ε/m (router.explore.floor; 0: plain SquareCB; the default chosen "
                             "by bandit_serve_select.py --floors)")
    parser.add_argument("--server", choices=("learner", "ridge"), default="learner",
                        help="the policy that serves while logging: the learner itself, retrained every --every, or "
                             "a per-LLM ridge regression (SERVE_RIDGE) refitted every --serve-every (default chosen "
                             "by bandit_serve_select.py); the learner's test Score is the curve either way")
    parser.add_argument("--serve-every", type=int, default=250,
                        help="--server ridge: refit the serving ridge every this many logged queries")
    parser.add_argument("--serve-from", type=int, default=500,
                        help="--server ridge: the shipped router serves the first this many queries, then the ridge "
                             "refitted every --serve-every (0: from --serve-every)")
    parser.add_argument("--deploy", choices=("always", "ope"), default="always",
                        help="after a retrain, serve the new learner always, or only when off-policy evaluation on "
                             "held-out logged queries rates it at least the frozen router (else the frozen router "
                             "keeps serving)")
    parser.add_argument("--prior", type=float, default=1000.0,
                        help="warm start from the frozen router: after t logged queries serve the blend of its and "
                             "the learner's scores with the learner's weight t / (t + prior) (0: the learner alone; "
                             "default chosen by bandit_serve_select.py)")
    parser.add_argument("--learner", default=BANDIT_LEARNER,
                        help="the bandit-fed learner (it also serves, with --server learner): a preset ("
                             + ", ".join(LEARNER_PRESETS) + ") or a JSON spec; the full-information reference "
                             "stays LEARNER (default chosen by bandit_serve_select.py --learners)")
    parser.add_argument("--impute-frozen", action="store_true",
                        help="warm-start the learner itself: fill the unrevealed quality cells of the log from the "
                             "frozen router's implied quality differences to the called LLM")
    parser.add_argument("--deploy-holdout", type=float, default=0.25,
                        help="--deploy ope: the most recent share of the log held out for that check")
    parser.add_argument("--curve", default="1000,2000,5000,10000",
                        help="logged-query counts of the learning curve (exploring and full information only; "
                             "empty: none)")
    parser.add_argument("--temperature", type=float, default=0.05, help="softmax temperature on policy scores")
    parser.add_argument("--noise", type=float, default=0.1, help="label flip rate of the noisy-judge variant")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each learner fit")
    parser.add_argument("--boot", type=int, default=500)
    parser.add_argument("--out", default=str(RESULTS / "bandit_replay"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the .md from the .json (refreshing its vw key from bandit_vw.json); no replay")
    return parser


def main() -> None:
    parser = replay_parser()
    args = parser.parse_args()
    try:
        learner_spec(args.learner)
    except ValueError as e:
        parser.error(str(e))
    if not 0.0 <= args.floor < 1.0:
        parser.error(f"--floor must be in [0, 1); got {args.floor}")
    if args.report_only:
        out = Path(args.out)
        result = json.loads(out.with_suffix(".json").read_text())
        result["vw"] = vw_summary() or result.get("vw")
        result["reference_ridge_server"] = ridge_server_reference() or result.get("reference_ridge_server")
        result["targets"] = targets(result)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(report(result, out.with_suffix(".png").is_file(),
                                                 out.with_suffix(".png").name))
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_before = os.getloadavg()
    embedded = load_default()
    encoder = embedded.get_encoder()
    runs: dict[str, list[dict]] = {}
    curve_runs: dict[str, list[dict]] = {}
    curve_sizes = sorted(int(c) for c in args.curve.split(",")) if args.curve else []
    curve_args = argparse.Namespace(**{**vars(args), "boot": 0})
    sizes = {}
    for name in args.datasets.split(","):
        train, test = load(name, 0, encoder)
        runs[name], curve_runs[name] = [], []
        for seed in [int(s) for s in args.seeds.split(",")]:
            order, warm_rows = traffic_order(len(train), args.traffic, args.warm, seed)
            warm = train.subset(warm_rows)  # full information, outside the traffic
            # routerbench3: the embedded router as shipped; mmlupro29 (no embedded router knows its pool): the
            # learner trained on the warm-start queries
            frozen = embedded if name == "routerbench3" else learner(args.steps, seed).fit(warm)
            runs[name].append(run_replay(name, train.subset(order[: args.traffic]), warm, test, frozen, seed, args))
            if curve_sizes:
                curve_order, _ = traffic_order(len(train), max(curve_sizes), args.warm, seed, protocol=args.traffic)
                curve_runs[name].append(run_replay(name, train.subset(curve_order), warm, test, frozen, seed,
                                                   curve_args, variants=("full information", EXPLORING)))
        pool = len(train) - len(warm_rows)
        sizes[name] = {"train_queries": len(train), "traffic": min(args.traffic, len(train)),
                       "warm_start_queries": len(warm_rows), "test_queries": len(test), "llms": train.n_llms,
                       "traffic_pool": pool,
                       "curve_passes": round(max(curve_sizes) / pool, 2) if curve_sizes else None}
    summary = summarise(runs)
    curves = {name: learning_curve(rs, curve_sizes) for name, rs in curve_runs.items() if rs}
    checks = [c for rs in runs.values() for r in rs for c in r["checks"]]
    cov = coverage(checks)
    gap = float(np.mean(summary["routerbench3"]["final_gap_per_seed"])) if "routerbench3" in summary else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "final_gap_to_full_information": gap,
        "final_gap_definition": "full-information minus bandit-fed (with exploration, no warm start) test Score at "
                                f"Balance on routerbench3 after {args.traffic} logged queries, mean over seeds",
        "final_gap_warm_start": float(np.mean(summary["routerbench3"]["final_gap_warm_start_per_seed"]))
        if "routerbench3" in summary else None,
        "goal": {"gap_below": 0.01, "met": None if gap is None else bool(gap <= 0.01),
                 "ope_coverage_at_least": 0.9},
        "learning_curve": curves.get("routerbench3", []),
        "learning_curve_by_dataset": curves,
        "learning_curve_definition": "per logged-query count n: gap = full-information minus bandit-fed (exploring, "
                                     "no warm start) test Score after n logged queries; served_score = true Score of "
                                     "what the exploring logging policy served on queries 1..n (the first --every "
                                     "by the frozen router); means over seeds with standard errors. Traffic beyond the "
                                     "training pool (training split minus the warm-start queries) replays it in "
                                     "passes, each a fresh permutation",
        "vw": vw_summary(),
        "reference_ridge_server": ridge_server_reference(),
        "ope_coverage": cov,
        "summary": summary,
        "sizes": sizes,
        "settings": {**vars(args), "lam": LAM, "learner": learner_name(learner_spec(args.learner)),
                     "learner_spec": learner_spec(args.learner), "full_information_learner": LEARNER_NAME,
                     "encoder": encoder.name, "seeds": args.seeds},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg(), "seconds": round(time.perf_counter() - started, 1)},
        "checks": checks,
    }
    result["targets"] = targets(result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plotted = plot(summary, out.with_suffix(".png"))
    md = report(result, plotted, out.with_suffix(".png").name)
    out.with_suffix(".md").write_text(md)
    print(md)


def explore_label(settings: dict) -> str:
    """The logging policy's settings in words."""
    if settings["explore"] == "squarecb":
        gamma = (f"γ = {settings['gamma']:g}" if settings.get("gamma") is not None else
                 f"γ = {settings['gamma_scale']:g} · t^{settings['gamma_exponent']:g}")
        prior = settings.get("prior") or 0
        server = ""
        if settings.get("server") == "ridge":
            server = (f"; served by a ridge refitted every {settings['serve_every']} logged queries from query "
                      f"{settings.get('serve_from') or settings['serve_every']}, the frozen router before")
        floor = settings.get("floor") or 0
        return (f"squarecb ({gamma}, t the queries logged so far"
                + (f"; uniform floor ε = {floor:g}: (1 − ε)·p + ε/m" if floor else "")
                + f"; deploy {settings.get('deploy', 'always')}"
                + (f"; warm start from the frozen router, learner weight t / (t + {prior:g})" if prior else "")
                + server + ")")
    if settings["explore"] == "softmax":
        return f"softmax (temperature {settings['temperature']}, ε = {settings['epsilon']} floor)"
    return f"epsilon (ε = {settings['epsilon']})"


def report(r: dict, plotted: bool, png: str) -> str:
    lines = ["# Bandit replay: learning from one revealed label per query", "",
             f"Settings: {r['settings']['traffic']} logged queries per run, retrain every {r['settings']['every']}, "
             f"exploration {explore_label(r['settings'])}, judge noise {r['settings']['noise']}, learner "
             f"{r['settings']['learner']} ({r['settings']['steps']} steps"
             + (f"; the full-information reference: {r['settings']['full_information_learner']}"
                if r['settings'].get('full_information_learner', r['settings']['learner']) != r['settings']['learner']
                else "")
             + f"), encoder {r['settings']['encoder']}, "
             f"seeds {r['settings']['seeds']}, λ = {LAM}. Machine: {r['machine']['cpus']} CPUs, load average "
             f"{r['machine']['load_before'][0]:.2f} before and {r['machine']['load_after'][0]:.2f} after; "
             f"{r['machine']['seconds']:.0f} s in all.", ""]
    for name, s in r["summary"].items():
        sz = r["sizes"][name]
        lines += [f"## {name} ({sz['llms']} LLMs; traffic from {sz['train_queries']} training queries, "
                  f"{sz['test_queries']} test queries)", "",
                  "Test Score (macro, λ = 0.02), mean ± std over seeds, by logged queries:", "",
                  "| policy | " + " | ".join(str(c) for c in s["checkpoints"]) + " | served Score |",
                  "|---|" + "---:|" * (len(s["checkpoints"]) + 1)]
        lines.append("| frozen | " + " | ".join(f"{s['frozen']:.4f}" for _ in s["checkpoints"]) + " | |")
        for v in VARIANTS:
            c = s["curves"][v]
            served = s["served_score"].get(v)
            lines.append(f"| {v} | " + " | ".join(f"{m:.4f} ± {d:.4f}" for m, d in zip(c["mean"], c["std"]))
                         + f" | {'' if served is None else f'{served:.4f}'} |")
        gaps, warm_gaps = s["final_gap_per_seed"], s["final_gap_warm_start_per_seed"]
        if "frozen_served" in s:
            lines += ["", f"The frozen router alone (greedy, never retrained) would have served "
                          f"{s['frozen_served']:.4f} ± {s['frozen_served_se'] or 0:.4f} on the same traffic."]
        lines += ["", f"Gap full information − exploring after {s['checkpoints'][-1]} queries: "
                      f"{np.mean(gaps):+.4f} (per seed: {', '.join(f'{g:+.4f}' for g in gaps)}); with the "
                      f"{sz['warm_start_queries']}-query warm start: {np.mean(warm_gaps):+.4f}.", ""]
    if plotted:
        lines += [f"![test Score against logged queries]({png})", ""]
    if r.get("learning_curve_by_dataset"):
        lines += ["## Learning curve", "",
                  "Exploring (the logging policy above) and full information only, retrained every "
                  f"{r['settings']['every']} queries, no OPE; mean ± standard error over seeds "
                  f"{r['settings']['seeds']}."
                  " Gap: full-information minus bandit-fed test Score after n logged queries; served: the true Score "
                  "of what was served on queries 1..n (the first block by the frozen router). Beyond its pool (the "
                  "training split less the warm-start queries) the traffic replays the pool in passes, each a fresh "
                  "permutation.", "",
                  "| data set | logged | passes over the pool | full information | bandit-fed | gap | served Score |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, rows in r["learning_curve_by_dataset"].items():
            pool = r["sizes"][name]["traffic_pool"]
            for c in rows:
                lines.append(f"| {name} | {c['logged']} | {c['logged'] / pool:.2f} | {c['full_information']:.4f} | "
                             f"{c['bandit']:.4f} | {c['gap']:+.4f} ± {c['gap_se'] or 0:.4f} | "
                             f"{c['served_score']:.4f} ± {c['served_score_se'] or 0:.4f} |")
        lines.append("")
    if r.get("vw"):
        v = r["vw"]
        lines += ["## Vowpal Wabbit on the same logs", "",
                  f"From [bandit_vw.md](bandit_vw.md) ({v.get('dataset', 'routerbench3')}, {v.get('logged', 2000)} "
                  "logged queries, same traffic, label draws and full-information reference; VW's settings chosen "
                  "on validation). Gap: full information minus the learner's test Score, mean ± s.e. over seeds.", "",
                  "| learner | gap to full information | served Score |", "|---|---:|---:|"]
        if v.get("ours"):
            o = v["ours"]
            lines.append(f"| radialrouter (this replay's logging and learner) | {o['final_gap']:+.4f} ± "
                         f"{o['final_gap_se'] or 0:.4f} | {o['served_score']:.4f} ± {o['served_score_se'] or 0:.4f} |")
        for name, row in v.get("learners", {}).items():
            a = ("served_score_test_validation_choice" if "served_score_test_validation_choice" in v
                 else "served_score")  # the row's setting: chosen by test Score on the validation queries, (a)
            served = f"{v[a]:.4f} ± {v.get(a + '_se') or 0:.4f}" if "on-policy" in name else ""
            lines.append(f"| {name} | {row['gap']:+.4f} ± {row['gap_se'] or 0:.4f} | {served} |")
        lines += ["", f"VW's best gap: {v['final_gap']:+.4f} ({v.get('best', '')})."]
        if "reference_best_served_on_traffic" in v:
            ref = v["reference_best_served_on_traffic"]
            lines += ["", "VW SquareCB's served Score (its own 2,000 queries from the first; mean ± s.e.) by how its "
                      "setting is chosen:", "",
                      "| choice | setting | served | gap to full information |", "|---|---|---:|---:|",
                      f"| (a) best test Score on the validation queries | "
                      f"{v['served_score_test_validation_choice_setting']} | "
                      f"{v['served_score_test_validation_choice']:.4f} ± "
                      f"{v['served_score_test_validation_choice_se'] or 0:.4f} | {v['squarecb_final_gap']:+.4f} ± "
                      f"{v.get('squarecb_final_gap_se') or 0:.4f} |",
                      f"| **(b) best served Score on the validation traffic (llmrouter9)** (the served target's "
                      "yardstick) | "
                      f"{v['served_score_setting']} | {v['served_score']:.4f} ± {v['served_score_se'] or 0:.4f} | "
                      f"{v['served_score_setting_gap']:+.4f} ± {v['served_score_setting_gap_se'] or 0:.4f} |",
                      f"| reference, not a result: best served on the traffic itself | {ref['setting']} | "
                      f"{ref['served_score']:.4f} ± {ref['served_score_se'] or 0:.4f} | {ref['gap']:+.4f} ± "
                      f"{ref['gap_se'] or 0:.4f} |"]
        lines.append("")
    ref = r.get("reference_ridge_server")
    if ref:
        lines += ["## Reference, not a result: serving by a ridge between retrains", "",
                  f"Not the chosen setting: {ref['label']}, the ridge candidate that served best on the older "
                  "validation stream ([bandit_serve_select_stream.md](bandit_serve_select_stream.md)), rerun on the "
                  "traffic with the same seeds (`--out` " + ref["file"] + ") before the serving settings were chosen "
                  "on llmrouter9 ([bandit_serve_select.md](bandit_serve_select.md)); the learner whose gap is "
                  "reported is the same `mlp`, trained on the ridge's log. Mean ± s.e. over seeds.", "",
                  "| serving policy | served, queries 1-2,000 | served, queries 501-2,000 | gap to full information "
                  "at 2,000 |", "|---|---:|---:|---:|",
                  f"| {ref['label']} | {ref['served']:.4f} ± {ref['served_se'] or 0:.4f} | "
                  f"{ref['served_after']:.4f} ± {ref['served_after_se'] or 0:.4f} | {ref['gap']:+.4f} ± "
                  f"{ref['gap_se'] or 0:.4f} |", ""]
        vw_seeds = (r.get("vw") or {}).get("served_score_per_seed")
        if vw_seeds and len(vw_seeds) == len(ref["served_per_seed"]):
            diff = np.subtract(ref["served_per_seed"], vw_seeds)
            lines += [f"Against VW SquareCB's (b) it served {diff.mean():+.4f} ± {std_err(list(diff)) or 0:.4f} "
                      f"(paired by seed; on queries 501-2,000 {ref['served_after']:.4f} against "
                      f"{r['vw'].get('served_score_after_first_block', float('nan')):.4f}). Its traffic figures "
                      "were seen before the validation design changed (from the 200-query stream, whose queries "
                      "recur ~10×, to llmrouter9); it stays a reference, not a result.", ""]
    cov = r["ope_coverage"]
    lines += ["## Off-policy evaluation against the replay's truth", "",
              "Share of checks whose 95 % bootstrap interval contains the true Score of the evaluated policy on the "
              "same logged block:", "", "| estimator | all checks | without overlap warning | with overlap warning |",
              "|---|---:|---:|---:|"]

    def fmt(x: dict) -> str:
        return "–" if x["covered"] is None else f"{x['covered']:.1%} of {x['checks']}"

    for est, c in cov["by_estimator"].items():
        lines.append(f"| {est} | {fmt(c['all'])} | {fmt(c['no_overlap_warning'])} | {fmt(c['overlap_warning'])} |")
    lines.append(f"| all | {fmt(cov['all'])} | {fmt(cov['no_overlap_warning'])} | |")
    gap = r["final_gap_to_full_information"]
    lines += ["", f"**final_gap_to_full_information** (routerbench3, 2,000 logged): {gap:+.4f} — goal ≤ 0.01: "
                  f"{'met' if r['goal']['met'] else 'not met'}." if gap is not None else "", ""]
    t = r.get("targets") or {}
    words = {True: "met", False: "not met"}
    if t.get("gap_at_largest_logged_below_0.01"):
        c = t["gap_at_largest_logged_below_0.01"]
        lines.append(f"- Gap ≤ 0.01 at {c['logged']} logged queries (routerbench3): {c['gap']:+.4f} ± "
                     f"{c['gap_se'] or 0:.4f} — {words[c['met']]}.")
    if t.get("gap_at_2000_at_most_vw_best"):
        c = t["gap_at_2000_at_most_vw_best"]
        lines.append(f"- Gap at 2,000 ≤ VW's best: {c['ours']:+.4f} vs {c['vw_best']:+.4f} — {words[c['met']]}.")
    if t.get("served_at_2000_at_least_vw_squarecb"):
        c = t["served_at_2000_at_least_vw_squarecb"]
        diff = ("" if c.get("difference") is None else
                f" (difference paired by seed {c['difference']:+.4f} ± {c['difference_se'] or 0:.4f})")
        lines.append(f"- Served Score at 2,000 ≥ VW SquareCB's (setting chosen on llmrouter9's traffic, choice (b)):"
                     f" {c['ours']:.4f} ± {c.get('ours_se') or 0:.4f} vs {c['vw_squarecb']:.4f} ± "
                     f"{c.get('vw_squarecb_se') or 0:.4f}{diff} — {words[c['met']]}.")
        if c.get("ours_after_first_block") is not None and c.get("vw_squarecb_after_first_block") is not None:
            lines.append(f"  On queries 501–2,000 alone: ours {c['ours_after_first_block']:.4f} ± "
                         f"{c.get('ours_after_first_block_se') or 0:.4f}, VW SquareCB's "
                         f"{c['vw_squarecb_after_first_block']:.4f} ± "
                         f"{c.get('vw_squarecb_after_first_block_se') or 0:.4f}.")
        lines += ["", "Caveat on the served Scores: routerbench3's shipped router (the frozen router that serves our "
                  "first 500 queries) was trained with full information on the training split, which holds every "
                  "traffic query, so it serves the traffic better than it routes unseen queries (greedy: "
                  f"{r['summary']['routerbench3']['frozen_served']:.4f} on the traffic against "
                  f"{r['summary']['routerbench3']['frozen']:.4f} on the test split). Served Scores of policies that "
                  "lean on it — our first block, and any blend with it — are inflated relative to VW's, which "
                  "starts from nothing; the Score served on queries 501–2,000 is the fairer comparison of what "
                  "learning from the log serves."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
