"""Pieces the baseline routers share: a per-query cost head, soft-label logistic scorers, threshold selection,
and a base class for torch routers that regress per-LLM quality from the query embedding."""

from __future__ import annotations

from typing import Any

import numpy as np

from radialrouter.core.objective import argmax_cheapest, utility
from radialrouter.core.scoring import summarize
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers.base import Router, RouterError, masked


# ---------------------------------------------------------------------------------------------- cost head
def fit_cost_head(x: np.ndarray, cost: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression from embeddings to log per-query cost (costs span two orders of magnitude with prompt
    length, and the log keeps predictions positive). The intercept carries Duan's smearing correction, so that
    ``exp`` of the prediction estimates the mean cost, not the geometric mean: spend targets (calibration) need
    unbiased means. Returns weights (d, m) and intercept (m,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.log(np.maximum(np.asarray(cost, dtype=np.float64), 1e-12))
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    b = y_mean - x_mean @ w
    smearing = np.log(np.exp(y - (x @ w + b)).mean(0))
    return w, b + smearing


def predict_cost_head(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """USD per query for each LLM."""
    return np.exp(np.asarray(x, dtype=np.float64) @ w + b)


# ---------------------------------------------------------------------------------------------- model selection
def macro_score(choice: np.ndarray, data: RoutingDataset, lam: float) -> float:
    """Macro Score (Perf − λ·Cost, averaged over tasks) of one LLM index per query of ``data`` (the chosen LLMs'
    quality must be known: route among ``data.observed``)."""
    rows = np.arange(len(data))
    return summarize(data.quality[rows, choice], data.cost[rows, choice], data.tasks, lam)["macro"].score


def best_llm(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """Per query, the LLM with the highest quality − λ·cost among those whose quality is known (not NaN); ties go
    to the cheaper LLM for that query."""
    score = utility(quality, cost, lam)
    return argmax_cheapest(np.where(np.isfinite(score), score, -np.inf), cost)


# ---------------------------------------------------------------------------------------------- scorers
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -50), 50)))  # np.clip's wrapper costs more than the math


def fit_soft_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """Logistic regression on labels in [0, 1]: each row appears once as a positive with weight y and once as a
    negative with weight 1 − y (the soft cross-entropy), so fractional qualities (GSM8K pass rates) work too.
    Returns (coef (d,), intercept); a constant label gives a constant model."""
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    if np.all(y == y[0]):
        p = float(np.clip(y[0], 1e-6, 1 - 1e-6))
        return np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    from sklearn.linear_model import LogisticRegression

    xx = np.concatenate([x, x])
    yy = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    ww = np.concatenate([y, 1.0 - y])
    keep = ww > 0
    model = LogisticRegression(C=c, max_iter=500, random_state=seed)
    model.fit(xx[keep], yy[keep], sample_weight=ww[keep])
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def out_of_fold(fit, predict, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Predictions for every training row from a model that did not see it, so thresholds picked on them are not
    fooled by the scorer's over-confidence on its own training data."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % folds
    out = np.empty(len(x))
    for k in range(folds):
        held = fold == k
        out[held] = predict(x[held], fit(x[~held], y[~held]))
    return out


#: A threshold above any probability: "never accept" (finite, so it can stand in a score matrix).
NEVER = 2.0


def quantile_grid(values: np.ndarray, n: int) -> np.ndarray:
    """Candidate thresholds on probabilities: ``n`` quantiles of ``values`` (the lowest accepts everything) plus
    `NEVER`, deduplicated."""
    qs = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, n))
    return np.unique(np.concatenate([qs, [NEVER]]))


def macro_perf_cost(perf_q: np.ndarray, cost_q: np.ndarray, tasks: np.ndarray) -> tuple[float, float]:
    """Macro Perf and Cost (USD per 1,000 queries) of per-query outcomes, as the evaluation reports them."""
    m = summarize(perf_q, cost_q, tasks, 0.0)["macro"]
    return m.perf, m.cost


def with_val(train: RoutingDataset, val: RoutingDataset | None) -> RoutingDataset:
    """Training rows followed by validation rows (labels only): the data operating points are selected on."""
    if val is None or not len(val):
        return train
    return RoutingDataset.from_arrays(
        prompts=np.concatenate([train.prompts, val.prompts]), tasks=np.concatenate([train.tasks, val.tasks]),
        quality=np.concatenate([train.quality, val.quality]), cost=np.concatenate([train.cost, val.cost]),
        llms=train.llms, source="train+val")


def best_setting(perf: np.ndarray, cost_per_1k: np.ndarray, lam: float) -> int:
    """Index of the stored operating point with the highest Score at ``lam`` (ties to the cheaper one)."""
    score = np.asarray(perf) - lam * np.asarray(cost_per_1k)
    return int(argmax_cheapest(score[None, :], np.asarray(cost_per_1k))[0])


# ---------------------------------------------------------------------------------------------- torch regressors
class QualityRegressorRouter(Router):
    """Base for routers that regress each LLM's quality from the query embedding with a torch module (sigmoid
    output, soft binary cross-entropy) and predict per-query cost with a ridge head. Scoring is λ-free:
    ``q̂ − λ·COST_SCALE·ĉ``, so one fit serves every λ. Model selection: the mean macro Score over the named
    trade-offs on ``val``, routed with the cost head."""

    partial_labels = True  # unknown quality cells (NaN) are masked out of the loss
    #: Trained on partial labels, an LLM's predicted quality is lowered by this many standard errors,
    #: sqrt(q̂(1 − q̂) / n) with n its number of labels, when routing: argmax over noisy estimates otherwise picks
    #: the LLMs whose few labels happened to be lucky (pessimism in offline policy learning).
    pessimism: float = 1.0

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    cost_alpha: float

    def _build(self, dim: int, n_llms: int):
        """The torch module mapping (n, dim) embeddings to (n, n_llms) logits."""
        raise NotImplementedError

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        import torch

        from radialrouter.core.training import set_seed, train_module

        x = require_embeddings(train, self)
        set_seed(self.seed)
        self.dim_ = x.shape[1]
        self.module_ = self._build(self.dim_, len(self.llms_))
        init = getattr(self, "init_from", None)  # warm start: a fitted router of this class, same LLMs and width
        if init is not None:
            if type(init) is not type(self) or list(init.llms_) != list(self.llms_) or init.dim_ != self.dim_:
                raise RouterError(f"{self.name}: can only warm-start from a fitted {self.name!r} router with the "
                                  f"same LLMs {self.llms_} and {self.dim_}-d inputs")
            self.module_.load_state_dict(init.module_.state_dict())
        xt = torch.from_numpy(x)
        known = np.isfinite(train.quality)
        yt = torch.from_numpy(np.clip(np.nan_to_num(train.quality), 0, 1).astype(np.float32))
        bce = torch.nn.BCEWithLogitsLoss()
        # a module may return (members, n, m) logits in training mode (an ensemble): every member's loss counts
        if known.all():
            def loss_fn(idx: np.ndarray) -> torch.Tensor:
                out = self.module_(xt[idx])
                return bce(out, yt[idx].expand_as(out))
        else:  # partial labels: the loss averages over the known cells of the batch only
            mt = torch.from_numpy(known.astype(np.float32))
            cell_bce = torch.nn.BCEWithLogitsLoss(reduction="none")

            def loss_fn(idx: np.ndarray) -> torch.Tensor:
                out = self.module_(xt[idx])
                m = mt[idx].expand_as(out)
                return (cell_bce(out, yt[idx].expand_as(out)) * m).sum() / m.sum().clamp_min(1.0)

        # The cost head first: model selection below routes with it.
        self.cost_w_, self.cost_b_ = fit_cost_head(x, train.cost, self.cost_alpha)
        val_fn = None
        if val is not None and len(val) and np.isfinite(val.quality).all():
            xv = require_embeddings(val, self)
            cost_v = predict_cost_head(xv, self.cost_w_, self.cost_b_)
            lams = sorted(set(self.presets_.values()))

            def val_fn() -> float:
                # The mean Score over the named trade-offs, as routed: Score at λ = 0 alone keeps the first
                # checkpoint that ranks the best LLM first, whose quality estimates may all still sit near 0.5 —
                # the cost then decides every other trade-off (`mf` sent everything to the cheapest LLM at Balance).
                quality = self._quality(xv)
                return float(np.mean([macro_score(best_llm(quality, cost_v, lam), val, lam) for lam in lams]))

        self.label_counts_ = None if known.all() else known.sum(axis=0).astype(np.float64)
        result = train_module(self.module_, loss_fn, len(train), steps=self.train_steps(len(train)),
                              batch_size=self.batch_size,
                              lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, val_fn=val_fn,
                              progress=False, desc=self.name)
        self.training_ = {"steps": result.steps, "best_step": result.best_step, "best_val_score": result.best_val,
                          "val_score_is": "mean macro Score over λ = " + ", ".join(f"{lam:g}" for lam in
                                                                                   sorted(set(self.presets_.values())))}

    def train_steps(self, n: int) -> int:
        """Optimiser steps for ``n`` training rows: ``steps``, or with ``epochs`` set at most that many passes over
        the rows (``ceil(epochs · n / batch_size)``, capped at ``steps``) — so a learner refitted on a growing log
        does not over-fit its first few hundred rows with the step count chosen for thousands."""
        epochs = getattr(self, "epochs", None)
        if not epochs:
            return int(self.steps)
        return int(min(self.steps, max(1, -(-int(epochs * n) // self.batch_size))))

    def _quality(self, x: np.ndarray) -> np.ndarray:
        layers = numpy_layers(self)
        if layers is not None:  # a plain Linear/ReLU stack: NumPy, ~10 µs at batch 1 instead of ~150 µs in torch
            return sigmoid(dense_forward(layers, np.asarray(x, dtype=np.float32))).astype(np.float64)
        import torch

        self.module_.eval()
        with torch.no_grad():
            return torch.sigmoid(self.module_(torch.from_numpy(np.asarray(x, dtype=np.float32)))).double().numpy()

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        return self._utility(x, predict_cost_head(x, self.cost_w_, self.cost_b_), lam)

    def _utility(self, x: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
        quality = self._quality(x)
        counts = getattr(self, "label_counts_", None)
        if counts is not None and self.pessimism > 0:
            quality = quality - self.pessimism * np.sqrt(quality * (1 - quality) / np.maximum(counts, 1.0))
        return utility(quality, cost, lam)

    def _route_arrays(self, x: np.ndarray, lam: float, mask: np.ndarray | None) -> tuple[np.ndarray, None,
                                                                                         np.ndarray]:
        cost = predict_cost_head(x, self.cost_w_, self.cost_b_)  # once: the scores and the expected cost read it
        scores = self._utility(x, cost, lam)
        return masked(scores, mask), None, cost

    def _costs(self, x: np.ndarray) -> np.ndarray:
        return predict_cost_head(x, self.cost_w_, self.cost_b_)

    def _state(self) -> dict[str, np.ndarray]:
        from radialrouter.routers._torchutil import module_tensors

        state = {**module_tensors(self.module_, "module"), "cost_w": self.cost_w_, "cost_b": self.cost_b_}
        if getattr(self, "label_counts_", None) is not None:
            state["label_counts"] = self.label_counts_
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {"dim": self.dim_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        from radialrouter.routers._torchutil import load_module_tensors

        self.dim_ = int(extra["dim"])
        self.module_ = load_module_tensors(self._build(self.dim_, len(self.llms_)), tensors, "module")
        self.cost_w_, self.cost_b_ = tensors["cost_w"], tensors["cost_b"]
        self.label_counts_ = tensors.get("label_counts")


def numpy_layers(router: Router) -> list[tuple[np.ndarray, np.ndarray] | None] | None:
    """The router's ``module_`` as NumPy layers — (W, b) for a Linear, None for a ReLU; Dropout, an identity at
    inference, left out — when it is an ``nn.Sequential`` of those alone (else None: run it in torch). Cached, and
    rebuilt whenever a weight changed (torch bumps a tensor's version on every in-place update: an optimiser step,
    ``load_state_dict``), so inference never reads stale weights after further training."""
    module = router.module_
    cached = getattr(router, "_numpy_layers", None)  # (module, its parameters, their versions, layers)
    if cached is not None and cached[0] is module and all(p._version == v for p, v in zip(cached[1], cached[2])):
        return cached[3]
    from torch import nn

    params = list(module.parameters())
    versions = [p._version for p in params]
    layers: list[tuple[np.ndarray, np.ndarray] | None] | None = []
    if not isinstance(module, nn.Sequential):
        layers = None
    else:
        for layer in module:
            if isinstance(layer, nn.Linear) and layer.bias is not None:
                layers.append((layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()))
            elif isinstance(layer, nn.ReLU):
                layers.append(None)
            elif not isinstance(layer, nn.Dropout):
                layers = None
                break
    router._numpy_layers = (module, params, versions, layers)
    return layers


def dense_forward(layers: list[tuple[np.ndarray, np.ndarray] | None], x: np.ndarray) -> np.ndarray:
    """Apply `numpy_layers` to ``x`` (n, d)."""
    for layer in layers:
        x = np.maximum(x, 0) if layer is None else x @ layer[0] + layer[1]
    return x


def require_embeddings(data: RoutingDataset, router: Router) -> np.ndarray:
    if data.embeddings is None:
        raise ValueError(f"{router.name}: the dataset has no embeddings; call data.embed(encoder) first")
    return np.asarray(data.embeddings, dtype=np.float32)


__all__ = [
    "NEVER", "QualityRegressorRouter", "best_llm", "best_setting", "fit_cost_head", "fit_soft_logistic",
    "macro_perf_cost", "macro_score", "out_of_fold", "predict_cost_head", "quantile_grid", "require_embeddings",
    "sigmoid", "with_val",
]
