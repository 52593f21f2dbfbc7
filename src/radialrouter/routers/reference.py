"""Reference points every comparison needs: Oracle (upper bound), Random, Best single, Task-best."""

from __future__ import annotations

import numpy as np

from radialrouter.core.objective import utility
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers.base import Outcomes, Router


class OracleRouter(Router):
    """Per-query argmax of quality − λ·cost using the true labels (ties to the cheaper LLM): the upper bound.

    Not a router one can deploy — it reads the answers' quality."""

    name = "oracle"
    uses_embeddings = False
    missing_cells = "masked"  # an LLM whose quality on a query is missing is never its choice

    def __init__(self) -> None:
        pass

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        pass

    def _scores(self, x: RoutingDataset, lam: float) -> np.ndarray:
        self._check_llms(x)
        score = utility(x.quality, x.cost, lam)
        return np.where(np.isfinite(score), score, -np.inf)

    def predict(self, queries, lam=None, candidates=None) -> np.ndarray:
        # Ties go to the cheaper LLM *for this query* (the per-query cost is known to the oracle).
        from radialrouter.core.objective import argmax_cheapest

        return argmax_cheapest(self.predict_scores(queries, lam, candidates), queries.cost)

    def _check_llms(self, x: RoutingDataset) -> None:
        if list(x.llms) != self.llms_:
            raise ValueError(f"the data's LLMs {list(x.llms)} differ from the router's {self.llms_}")


class RandomRouter(Router):
    """Uniformly random LLM. Evaluation uses the expected value over the draw, not one lucky sample (over each
    query's observed LLMs when some quality cells are missing)."""

    name = "random"
    uses_embeddings = False
    random_pick = True
    missing_cells = "masked"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        pass

    def _scores(self, x, lam: float) -> np.ndarray:
        # The argmax of i.i.d. uniforms is a uniform random choice; the generator is seeded once per router.
        if getattr(self, "_rng", None) is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng.random((len(x), len(self.llms_)))

    def _inputs(self, queries):
        # Random needs nothing from the query; accept text, vectors or a dataset alike.
        return queries if isinstance(queries, RoutingDataset) else np.atleast_1d(np.asarray(queries, dtype=object))

    def _proba(self, x, lam: float) -> np.ndarray:
        return np.full((len(x), len(self.llms_)), 1.0 / len(self.llms_))

    def outcomes(self, data: RoutingDataset, lam: float) -> Outcomes:
        observed = data.observed
        weights = observed / observed.sum(axis=1, keepdims=True)
        quality = np.where(observed, data.quality, 0.0)
        return Outcomes(weights, (weights * quality).sum(1), (weights * data.cost).sum(1))


class BestSingleRouter(Router):
    """Always the one LLM with the best mean Score on the training split at the requested λ."""

    name = "best-single"
    uses_embeddings = False
    missing_cells = "masked"  # each LLM's mean quality over the training rows where it is observed

    def __init__(self) -> None:
        pass

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        self.mean_quality_ = np.nan_to_num(train.mean_quality, nan=0.0)  # an LLM observed nowhere: never preferred

    def _inputs(self, queries):
        return queries if isinstance(queries, RoutingDataset) else np.atleast_1d(np.asarray(queries, dtype=object))

    def _scores(self, x, lam: float) -> np.ndarray:
        return np.broadcast_to(utility(self.mean_quality_, self.mean_cost_, lam), (len(x), len(self.llms_)))

    def _state(self) -> dict[str, np.ndarray]:
        return {"mean_quality": self.mean_quality_}

    def _load_state(self, tensors, extra) -> None:
        self.mean_quality_ = tensors["mean_quality"]


class TaskBestRouter(Router):
    """The best LLM per task on the training split. It reads the task label, so it is a reference point, not a
    router one can deploy on unlabelled traffic; unseen tasks fall back to the overall best."""

    name = "task-best"
    uses_embeddings = False
    missing_cells = "masked"  # per task, each LLM's mean quality over the rows where it is observed

    def __init__(self) -> None:
        pass

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        self.tasks_ = train.task_names
        self.mean_quality_ = np.nan_to_num(train.mean_quality, nan=0.0)
        # An LLM observed on no training row of a task falls back to its overall mean quality.
        per_task = np.stack([train.subset(train.tasks == t).mean_quality for t in self.tasks_])
        self.task_quality_ = np.where(np.isnan(per_task), self.mean_quality_, per_task)
        self.task_cost_ = np.stack([train.cost[train.tasks == t].mean(0) for t in self.tasks_])

    def _scores(self, x: RoutingDataset, lam: float) -> np.ndarray:
        table = utility(self.task_quality_, self.task_cost_, lam)
        overall = utility(self.mean_quality_, self.mean_cost_, lam)
        index = {t: i for i, t in enumerate(self.tasks_)}
        return np.stack([table[index[t]] if t in index else overall for t in x.tasks.tolist()]) if len(x) else (
            np.zeros((0, len(self.llms_))))

    def _state(self) -> dict[str, np.ndarray]:
        return {"task_quality": self.task_quality_, "task_cost": self.task_cost_, "mean_quality": self.mean_quality_}

    def _extra_state(self) -> dict:
        return {"tasks": self.tasks_}

    def _load_state(self, tensors, extra) -> None:
        self.task_quality_, self.task_cost_ = tensors["task_quality"], tensors["task_cost"]
        self.mean_quality_ = tensors["mean_quality"]
        self.tasks_ = list(extra["tasks"])

