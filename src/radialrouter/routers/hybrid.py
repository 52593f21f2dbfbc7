"""HybridLLM baseline (Ding et al., ICLR 2024): a small/large pair and a classifier that says when the small
model is good enough."""

from __future__ import annotations

from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import argmax_cheapest, utility
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import (
    best_setting,
    fit_soft_logistic,
    macro_perf_cost,
    out_of_fold,
    quantile_grid,
    require_embeddings,
    sigmoid,
    with_val,
)
from radialrouter.routers.base import Router, RouterError


class HybridRouter(Router):
    """Small = the cheapest LLM, large = the strongest (training mean quality, ties to the cheaper). A logistic
    regression on the embedding predicts P(small is good enough) from labels ``1[q_small ≥ q_large]`` — with
    ``soft=True`` the label is ``clip(1 − (q_large − q_small), 0, 1)``, equal to the hard one on 0/1 quality and
    graded on fractional quality. A query goes to small when P ≥ threshold.

    The threshold depends on λ without refitting: ``fit`` stores, for a grid of thresholds, the macro Perf and
    Cost they achieve on out-of-fold training predictions plus the validation split; at route time the threshold
    with the best Score at that λ is used. Every LLM outside the pair ranks below it (by training mean Score),
    so it is chosen only when ``candidates`` excludes the pair."""

    name = "hybrid"
    #: Missing cells: the pair is chosen on observed means; the classifier and the thresholds learn from the rows
    #: where both LLMs of the pair are observed.
    missing_cells = "masked"

    def __init__(self, soft: bool = True, c: float = 1.0, folds: int = 5, n_thresholds: int = 101, seed: int = 0,
                 encoder: QueryEncoder | None = None) -> None:
        self.soft = soft
        self.c = c
        self.folds = folds
        self.n_thresholds = n_thresholds
        self.seed = seed
        self.encoder = encoder

    def _labels(self, quality: np.ndarray) -> np.ndarray:
        gap = quality[:, self.large_] - quality[:, self.small_]
        return np.clip(1.0 - gap, 0.0, 1.0) if self.soft else (gap <= 0).astype(np.float64)

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        x = require_embeddings(train, self)
        self.mean_quality_ = train.mean_quality
        self.small_ = int(np.argmin(self.mean_cost_))
        self.large_ = int(argmax_cheapest(np.nan_to_num(self.mean_quality_, nan=-1.0)[None, :], self.mean_cost_)[0])
        self.mean_quality_ = np.nan_to_num(self.mean_quality_, nan=0.0)
        pair = train.observed[:, [self.small_, self.large_]].all(axis=1)
        if not pair.any():
            raise RouterError(f"hybrid: no training row has the quality of both {self.llms_[self.small_]!r} and "
                              f"{self.llms_[self.large_]!r}")
        if not pair.all():
            train = train.subset(pair)
            x = x[pair]
        if val is not None and len(val):
            val = val.subset(val.observed[:, [self.small_, self.large_]].all(axis=1))
        y = self._labels(train.quality)

        def fit(xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, float]:
            return fit_soft_logistic(xx, yy, self.c, self.seed)

        def predict(xx: np.ndarray, model: tuple[np.ndarray, float]) -> np.ndarray:
            return sigmoid(xx @ model[0] + model[1])

        self.coef_, self.intercept_ = fit(x, y)
        p_sel = out_of_fold(fit, predict, x, y, self.folds, self.seed) if self.folds > 1 else predict(x, (
            self.coef_, self.intercept_))
        if val is not None and len(val):
            p_sel = np.concatenate([p_sel, self._p_small(require_embeddings(val, self))])
        sel = with_val(train, val)
        self.thresholds_ = quantile_grid(p_sel, self.n_thresholds)
        perf, cost = [], []
        rows = np.arange(len(sel))
        for t in self.thresholds_:
            choice = np.where(p_sel >= t, self.small_, self.large_)
            p, c = macro_perf_cost(sel.quality[rows, choice], sel.cost[rows, choice], sel.tasks)
            perf.append(p)
            cost.append(c)
        self.sel_perf_, self.sel_cost_ = np.asarray(perf), np.asarray(cost)
        self.training_ = {"small": self.llms_[self.small_], "large": self.llms_[self.large_], "n_select": len(sel)}

    def _p_small(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_)

    def threshold(self, lam: float) -> float:
        """The P(small is good enough) threshold used at ``lam``."""
        self._check_fitted()
        return float(self.thresholds_[best_setting(self.sel_perf_, self.sel_cost_, lam)])

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        n = len(x)
        others = utility(self.mean_quality_, self.mean_cost_, lam)
        scores = np.broadcast_to(others - others.max() - 10.0, (n, len(self.llms_))).copy()
        # large scores the threshold, small scores P: argmax (ties to the cheaper) takes small iff P ≥ threshold.
        scores[:, self.large_] = self.threshold(lam)
        scores[:, self.small_] = self._p_small(x)
        return scores

    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": np.asarray([self.intercept_]), "mean_quality": self.mean_quality_,
                "thresholds": self.thresholds_, "sel_perf": self.sel_perf_, "sel_cost": self.sel_cost_}

    def _extra_state(self) -> dict[str, Any]:
        return {"small": self.small_, "large": self.large_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.coef_, self.intercept_ = tensors["coef"], float(tensors["intercept"][0])
        self.mean_quality_, self.thresholds_ = tensors["mean_quality"], tensors["thresholds"]
        self.sel_perf_, self.sel_cost_ = tensors["sel_perf"], tensors["sel_cost"]
        self.small_, self.large_ = int(extra["small"]), int(extra["large"])
