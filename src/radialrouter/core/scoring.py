"""Scoring helpers the routers share with evaluation: Perf / Cost / Score summaries of per-query outcomes, the Pareto
front of (cost, perf) points and the budgeted choice (best predicted quality within a per-query cost).

Moved here from `radialrouter.evaluation` and `radialrouter.evaluation.budget_sweep` so that the routers (layer 2)
need nothing above them; those modules import them back, so every old import still works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from radialrouter.core.objective import COST_SCALE, argmax_cheapest


@dataclass(frozen=True)
class Metrics:
    perf: float
    cost: float  # USD per 1,000 queries
    score: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _metrics(perf: float, cost_per_1k: float, lam: float) -> Metrics:
    return Metrics(float(perf), float(cost_per_1k), float(perf - lam * cost_per_1k))


def summarize(perf_q: np.ndarray, cost_q_usd: np.ndarray, tasks: np.ndarray, lam: float) -> dict:
    """Macro (over tasks), micro and per-task Perf / Cost / Score of per-query outcomes."""
    perf_q = np.asarray(perf_q, dtype=np.float64)
    cost_q = np.asarray(cost_q_usd, dtype=np.float64) * COST_SCALE
    if not (np.isfinite(perf_q).all() and np.isfinite(cost_q).all()):
        # A missing quality cell must never become a reported figure: evaluation routes among observed LLMs.
        raise ValueError(f"{int((~np.isfinite(perf_q)).sum())} per-query qualities and "
                         f"{int((~np.isfinite(cost_q)).sum())} costs are missing (NaN): metrics need the outcome of "
                         "every query (route among data.observed; `single_llm_summary` for one LLM)")
    per_task = {}
    for task in dict.fromkeys(np.asarray(tasks).tolist()):
        mask = tasks == task
        per_task[task] = _metrics(perf_q[mask].mean(), cost_q[mask].mean(), lam)
    macro = _metrics(np.mean([m.perf for m in per_task.values()]), np.mean([m.cost for m in per_task.values()]), lam)
    return {"macro": macro, "micro": _metrics(perf_q.mean(), cost_q.mean(), lam), "per_task": per_task}


# ---------------------------------------------------------------------------------------------- curves
def pareto_front(costs: Sequence[float], perfs: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats on both cost (lower) and perf (higher), by increasing cost."""
    costs, perfs = np.asarray(costs, float), np.asarray(perfs, float)
    order = np.lexsort((-perfs, costs))
    front, best = [], -np.inf
    for i in order:
        if perfs[i] > best + 1e-12:
            front.append(i)
            best = perfs[i]
    return np.asarray(front, dtype=np.int64)


def choose_within_budget(scores: np.ndarray, costs: np.ndarray, budget: float,
                         candidates: np.ndarray | None = None) -> np.ndarray:
    """Per query, the best-scoring LLM whose predicted cost is ≤ ``budget`` (ties to the cheaper one); a query
    with no LLM under the budget gets its cheapest LLM, since not answering is not an option. ``candidates``
    (n, m) bool restricts each query to those LLMs (e.g. its observed ones in evaluation)."""
    scores = np.asarray(scores, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if candidates is not None:
        candidates = np.broadcast_to(np.asarray(candidates, dtype=bool), costs.shape)
        scores = np.where(candidates, scores, -np.inf)
        costs_c = np.where(candidates, costs, np.inf)
    else:
        costs_c = costs
    allowed = costs_c <= budget
    allowed[np.arange(len(costs)), np.argmin(costs_c, axis=1)] |= ~allowed.any(axis=1)
    return argmax_cheapest(np.where(allowed & np.isfinite(scores), scores, -np.inf), costs)


__all__ = ["Metrics", "choose_within_budget", "pareto_front", "summarize"]
