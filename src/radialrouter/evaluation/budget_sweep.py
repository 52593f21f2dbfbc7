"""Budgeted routing and the budget sweep of EquiRouter's evaluation ("When Routing Collapses", papers.md §2).

Under a per-query budget C, a query goes to the LLM with the best predicted quality among those whose predicted
cost is at most C. Sweeping C over quantiles of the predicted costs traces a cost–quality curve; the share of
queries sent to the most expensive LLM at the largest budget is the routing-collapse symptom the paper reports.
"""

from __future__ import annotations

import numpy as np

from radialrouter.core.scoring import choose_within_budget
from radialrouter.data.dataset import RoutingDataset
from radialrouter.evaluation.metrics import collapse_stats, summarize
from radialrouter.routers.base import Outcomes, Router, observed_candidates


def budget_outcomes(router: Router, data: RoutingDataset, budget: float) -> Outcomes:
    """What ``router`` realises on ``data`` at per-query budget ``budget`` (USD): its own budgeted decision when
    it has one (``outcomes_at_budget``), otherwise its λ = 0 scores restricted to the LLMs it predicts to fit —
    in both cases among each query's observed LLMs."""
    if hasattr(router, "outcomes_at_budget"):
        return router.outcomes_at_budget(data, budget)
    mask = observed_candidates(data)
    return Outcomes.of_choices(
        data, choose_within_budget(router.predict_scores(data, 0.0, mask), router.predict_costs(data), budget, mask))


def budget_sweep(router: Router, data: RoutingDataset, n: int = 20) -> list[dict]:
    """Sweep the per-query budget over ``n`` quantiles (0 … 1) of the router's predicted costs on ``data``.

    One row per distinct budget, cheapest first: ``budget`` (USD per query), macro ``perf`` and ``cost`` (USD per
    1,000 queries, as everywhere), their ``micro`` versions, ``most_expensive_share`` and ``overspend_share``."""
    if n < 2:
        raise ValueError(f"a budget sweep needs n ≥ 2 budgets; got {n}")
    predicted = np.asarray(router.predict_costs(data), dtype=np.float64)
    rows = []
    for budget in np.unique(np.quantile(predicted, np.linspace(0.0, 1.0, n))):
        out = budget_outcomes(router, data, float(budget))
        summary = summarize(out.perf, out.cost, data.tasks, 0.0)
        rows.append({
            "budget": float(budget),
            "perf": summary["macro"].perf,
            "cost": summary["macro"].cost,
            "micro": {"perf": summary["micro"].perf, "cost": summary["micro"].cost},
            **collapse_stats(out.weights, data.quality, data.cost),
        })
    return rows
