"""FrugalGPT baseline (Chen et al. 2023): call LLMs from the cheapest up and stop at the first answer a scorer
accepts; every LLM called is paid for."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import utility
from radialrouter.core.scoring import pareto_front
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
from radialrouter.routers.base import Outcomes, Router, RouterError


class FrugalRouter(Router):
    """A cascade over at most ``max_stages`` LLMs of the training cost–quality Pareto front (by mean cost and mean
    quality, cheapest first; when the front is longer, evenly spaced members including its cheapest and its
    strongest). Per stage a logistic scorer predicts that LLM's quality; stage s accepts when the prediction
    reaches its threshold, the last stage always accepts. Realised cost is the sum over every LLM called.

    Differences from the paper, by necessity: FrugalGPT's scorer reads the generated answer; routing logs have
    no answers, so the scorer sees only the query. The acceptance decision is therefore known before any call,
    and the cascade pays for rejected calls a query-only router would skip — which is what this baseline
    measures. Thresholds depend on λ without refitting: ``fit`` stores the macro Perf/Cost of every threshold
    combination (per stage, a grid of quantiles of its predictions) on out-of-fold training predictions plus the
    validation split; at route time the combination with the best Score at that λ is used.

    ``route`` ranks the accepted LLM first, then the later stages (where the cascade would escalate), then the
    rejected earlier stages, then the LLMs outside the cascade by training mean Score; ``expected_cost_usd`` of the
    accepted LLM is the pool's mean cost summed over the stages called."""

    name = "frugal"

    def __init__(self, max_stages: int = 3, c: float = 1.0, folds: int = 5, n_thresholds: int = 21, seed: int = 0,
                 encoder: QueryEncoder | None = None) -> None:
        self.max_stages = max_stages
        self.c = c
        self.folds = folds
        self.n_thresholds = n_thresholds
        self.seed = seed
        self.encoder = encoder

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        if self.max_stages < 1:
            raise RouterError(f"frugal: max_stages must be ≥ 1; got {self.max_stages}")
        x = require_embeddings(train, self).astype(np.float64)
        self.mean_quality_ = train.quality.mean(axis=0)
        front = pareto_front(self.mean_cost_, self.mean_quality_)
        keep = np.unique(np.round(np.linspace(0, len(front) - 1, min(self.max_stages, len(front)))).astype(int))
        self.cascade_ = front[keep].astype(np.int64)

        def fit(xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, float]:
            return fit_soft_logistic(xx, yy, self.c, self.seed)

        def predict(xx: np.ndarray, model: tuple[np.ndarray, float]) -> np.ndarray:
            return sigmoid(xx @ model[0] + model[1])

        models = [fit(x, train.quality[:, j]) for j in self.cascade_]
        self.coef_ = np.stack([w for w, _ in models], axis=1)
        self.intercept_ = np.asarray([b for _, b in models])
        if self.folds > 1:
            pred = np.stack([out_of_fold(fit, predict, x, train.quality[:, j], self.folds, self.seed)
                             for j in self.cascade_], axis=1)
        else:
            pred = self._predicted_quality(x)
        if val is not None and len(val):
            pred = np.concatenate([pred, self._predicted_quality(require_embeddings(val, self))])
        sel = with_val(train, val)
        grids = [quantile_grid(pred[:, s], self.n_thresholds) for s in range(len(self.cascade_) - 1)]
        settings = list(itertools.product(*grids))  # one empty setting when the cascade has a single stage
        combos = np.asarray(settings, dtype=np.float64).reshape(len(settings), len(grids))
        perf, cost = [], []
        for thresholds in combos:
            stage = self._first_accept(pred, thresholds)
            q, c = self._realised(sel, stage)
            p, c1k = macro_perf_cost(q, c, sel.tasks)
            perf.append(p)
            cost.append(c1k)
        self.thresholds_, self.sel_perf_, self.sel_cost_ = combos, np.asarray(perf), np.asarray(cost)
        self.training_ = {"cascade": [self.llms_[j] for j in self.cascade_], "n_select": len(sel)}

    # ------------------------------------------------------------------ the cascade
    def _predicted_quality(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_)

    @staticmethod
    def _first_accept(pred: np.ndarray, thresholds: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Index of the first accepting stage per query (the last stage always accepts). ``present`` (n, stages):
        only these stages run for a query (its observed LLMs), and the last of them always accepts."""
        accept = np.concatenate([pred[:, :-1] >= thresholds[None, :], np.ones((len(pred), 1), bool)], axis=1)
        if present is not None:
            last = present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
            accept &= present
            accept[np.arange(len(pred)), last] = True
        return np.argmax(accept, axis=1)

    def _realised(self, data: RoutingDataset, stage: np.ndarray,
                  present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Quality of the accepted answer and the cost of every call up to and including it (of the stages in
        ``present`` only, when given)."""
        rows = np.arange(len(data))
        cost = data.cost[:, self.cascade_]
        cum_cost = np.cumsum(cost if present is None else np.where(present, cost, 0.0), axis=1)
        return data.quality[rows, self.cascade_[stage]], cum_cost[rows, stage]

    def _present(self, data: RoutingDataset) -> np.ndarray | None:
        """Per query, the cascade stages whose LLM is observed (None: every stage on every query)."""
        return data.observed[:, self.cascade_] if data.has_missing else None

    def thresholds(self, lam: float) -> np.ndarray:
        """Acceptance thresholds of the stages but the last at ``lam``."""
        self._check_fitted()
        return self.thresholds_[best_setting(self.sel_perf_, self.sel_cost_, lam)]

    def accepted_stage(self, x: np.ndarray, lam: float) -> np.ndarray:
        """Cascade stage whose answer is accepted, per query."""
        return self._first_accept(self._predicted_quality(x), self.thresholds(lam))

    # ------------------------------------------------------------------ router interface
    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        stage = self.accepted_stage(x, lam)
        k, m = len(self.cascade_), len(self.llms_)
        outside = [j for j in np.argsort(-utility(self.mean_quality_, self.mean_cost_, lam), kind="stable")
                   if j not in set(self.cascade_.tolist())]
        scores = np.empty((len(x), m))
        for s in range(k):
            order = [*range(s, k), *range(s - 1, -1, -1)]
            llm_order = [int(self.cascade_[t]) for t in order] + [int(j) for j in outside]
            rows = stage == s
            scores[np.ix_(rows, llm_order)] = np.arange(m, 0, -1, dtype=np.float64)
        return scores

    def _costs(self, x: np.ndarray) -> np.ndarray:
        # Choosing stage s of the cascade pays for every LLM called before it too.
        costs = self.mean_cost_.copy()
        costs[self.cascade_] = np.cumsum(self.mean_cost_[self.cascade_])
        return np.broadcast_to(costs, (len(x), len(self.llms_)))

    def outcomes(self, data: RoutingDataset, lam: float) -> Outcomes:
        """The cascade's realised quality and cost. With missing quality cells, a query runs the cascade over its
        observed stages only (an unobserved stage is skipped, neither called nor paid for; the last observed stage
        always accepts); a query observed on none of the cascade's LLMs goes to its best observed LLM by the
        router's ranking."""
        x = self._inputs(data)
        present = self._present(data)
        if present is None:
            stage = self.accepted_stage(x, lam)
            perf, cost = self._realised(data, stage)
            choice = self.cascade_[stage]
        else:
            has_stage = present.any(axis=1)
            safe = np.where(has_stage[:, None], present, True)
            stage = self._first_accept(self._predicted_quality(x), self.thresholds(lam), safe)
            perf, cost = self._realised(data, stage, safe)
            choice = self.cascade_[stage]
            if not has_stage.all():
                rows = ~has_stage
                other = self.predict(data.subset(rows), lam, data.observed[rows])
                choice = choice.copy()
                choice[rows] = other
                perf[rows] = data.quality[rows, other]
                cost[rows] = data.cost[rows, other]
        weights = np.zeros((len(data), len(self.llms_)))
        weights[np.arange(len(data)), choice] = 1.0
        return Outcomes(weights, perf, cost)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_, "cascade": self.cascade_,
                "mean_quality": self.mean_quality_, "thresholds": self.thresholds_, "sel_perf": self.sel_perf_,
                "sel_cost": self.sel_cost_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.coef_, self.intercept_ = tensors["coef"], tensors["intercept"]
        self.cascade_, self.mean_quality_ = tensors["cascade"].astype(np.int64), tensors["mean_quality"]
        self.thresholds_, self.sel_perf_, self.sel_cost_ = tensors["thresholds"], tensors["sel_perf"], tensors[
            "sel_cost"]
