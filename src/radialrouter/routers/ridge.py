"""Ridge regression baseline: each LLM's quality is a linear function of the query embedding, fitted in closed
form — a learner that is usable after a few hundred one-label rows and refits in milliseconds."""

from __future__ import annotations

from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import utility
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import fit_cost_head, predict_cost_head, require_embeddings
from radialrouter.routers.base import Router, RouterError


class RidgeRouter(Router):
    """Per LLM, ridge regression of quality on the query embedding (with an unpenalised intercept), over the rows
    where that LLM's quality is known; per-query cost from the ridge head on log cost the ``mlp`` uses. λ-free:
    ``q̂ − λ·COST_SCALE·ĉ`` at route time.

    Partial labels (logged traffic, one label per query) are its use: each LLM's regression reads only its own
    labels, so an LLM with n labels has a d-dimensional linear fit of n points, shrunk toward that LLM's mean label
    by ``alpha`` (the L2 penalty on the weights); an LLM with no label predicts the mean of all labels. This is the
    model Vowpal Wabbit's contextual bandits fit (a linear score per action), solved exactly instead of by SGD,
    and cheap enough to refit on every few hundred logged requests.

    ``pessimism`` p ≥ 0: routing lowers each estimate by p standard errors of the ridge prediction,
    ``σ_j · sqrt(xᵀ A_j⁻¹ x + 1 / n_j)`` with A_j the LLM's regularised Gram matrix and σ_j its residual spread —
    a lower confidence bound, as the ``mlp``'s ``pessimism`` (an argmax over noisy estimates picks the LLM whose
    few labels were lucky). 0 by default."""

    name = "ridge"
    partial_labels = True  # each LLM's regression reads only the rows where its quality is known

    def __init__(self, alpha: float = 1.0, pessimism: float = 0.0, cost_alpha: float = 1.0,
                 encoder: QueryEncoder | None = None) -> None:
        self.alpha = alpha
        self.pessimism = pessimism
        self.cost_alpha = cost_alpha
        self.encoder = encoder

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        if not (self.alpha > 0 and self.pessimism >= 0):
            raise RouterError(f"ridge: alpha must be > 0 and pessimism ≥ 0; got {self.alpha}, {self.pessimism}")
        x = require_embeddings(train, self).astype(np.float64)
        n, d = x.shape
        m = len(self.llms_)
        quality = np.asarray(train.quality, dtype=np.float64)
        known = np.isfinite(quality)
        overall = float(quality[known].mean()) if known.any() else 0.5
        self.dim_ = d
        self.coef_ = np.zeros((d, m))
        self.intercept_ = np.full(m, overall)
        self.x_mean_ = np.zeros((m, d))
        self.cov_ = np.zeros((m, d, d))  # A_j⁻¹, for the standard errors of `pessimism`
        self.sigma_ = np.full(m, 0.5)
        self.label_counts_ = known.sum(0).astype(np.float64)
        for j in range(m):
            rows = known[:, j]
            if not rows.any():
                self.cov_[j] = np.eye(d) / self.alpha
                continue
            xj, yj = x[rows], quality[rows, j]
            x_mean, y_mean = xj.mean(0), yj.mean()
            xc = xj - x_mean
            a_inv = np.linalg.inv(xc.T @ xc + self.alpha * np.eye(d))
            w = a_inv @ (xc.T @ (yj - y_mean))
            resid = yj - y_mean - xc @ w
            self.coef_[:, j], self.intercept_[j], self.x_mean_[j], self.cov_[j] = w, y_mean, x_mean, a_inv
            # the residual spread, with the labels' own spread as a prior worth one row (a single label has none)
            self.sigma_[j] = float(np.sqrt((resid @ resid + yj.var() + 0.25) / (len(yj) + 1)))
        self.cost_w_, self.cost_b_ = fit_cost_head(x, train.cost, self.cost_alpha)
        self.training_ = {"alpha": self.alpha, "labels_per_llm": self.label_counts_.tolist()}

    def _quality(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        q = np.einsum("nd,dm->nm", x, self.coef_) - np.einsum("md,dm->m", self.x_mean_, self.coef_) + self.intercept_
        return np.clip(q, 0.0, 1.0)

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        quality = self._quality(x)
        p = float(getattr(self, "pessimism", 0.0))
        if p > 0:
            xc = np.asarray(x, dtype=np.float64)[:, None, :] - self.x_mean_[None]  # (n, m, d)
            spread = np.einsum("nmd,mde,nme->nm", xc, self.cov_, xc)
            se = self.sigma_ * np.sqrt(np.maximum(spread, 0.0) + 1.0 / np.maximum(self.label_counts_, 1.0))
            quality = quality - p * se
        return utility(quality, predict_cost_head(x, self.cost_w_, self.cost_b_), lam)

    def _costs(self, x: np.ndarray) -> np.ndarray:
        return predict_cost_head(x, self.cost_w_, self.cost_b_)

    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_, "x_mean": self.x_mean_, "cov": self.cov_,
                "sigma": self.sigma_, "label_counts": self.label_counts_, "cost_w": self.cost_w_,
                "cost_b": self.cost_b_}

    def _extra_state(self) -> dict[str, Any]:
        return {"dim": self.dim_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.dim_ = int(extra["dim"])
        self.coef_, self.intercept_, self.x_mean_ = tensors["coef"], tensors["intercept"], tensors["x_mean"]
        self.cov_, self.sigma_, self.label_counts_ = tensors["cov"], tensors["sigma"], tensors["label_counts"]
        self.cost_w_, self.cost_b_ = tensors["cost_w"], tensors["cost_b"]
