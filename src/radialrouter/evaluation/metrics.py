"""Metrics of the field as pure functions over arrays, plus the loop that evaluates a router on a test split.

Perf is mean quality, Cost is mean USD per 1,000 queries, Score = Perf − λ·Cost. Figures are macro-averaged over
tasks (the mean of per-task means, as RouterDC and RadialRouter report) with micro averages and per-task values
alongside. Curve metrics (AIQ, QNC, Pareto front) work on (cost, perf) points from a λ sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from radialrouter.core.objective import SCENARIOS, preset_name
from radialrouter.core.scoring import Metrics, _metrics, pareto_front, summarize  # noqa: F401  (moved there; still here)
from radialrouter.data.dataset import RoutingDataset

#: λ values for Score-vs-λ and cost–quality curves (USD per 1,000 queries).
DEFAULT_SWEEP: tuple[float, ...] = (0.0, *np.round(np.geomspace(1e-3, 3.0, 24), 6).tolist())


def single_llm_summary(data: RoutingDataset, j: int, lam: float = 0.0) -> dict:
    """`summarize` of always calling LLM ``j``, over the queries where its quality is observed (all of them unless
    cells are missing; tasks where it is observed on none are left out of the macro average)."""
    rows = data.observed[:, j]
    if not rows.any():
        raise ValueError(f"{data.llms[j]!r} has no observed quality on these {len(data)} queries")
    return summarize(data.quality[rows, j], data.cost[rows, j], data.tasks[rows], lam)


def most_expensive_llm(data: RoutingDataset) -> int:
    return int(np.argmax(data.mean_cost))


def collapse_stats(weights: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> dict[str, float]:
    """Routing-collapse diagnostics of one set of decisions.

    ``most_expensive_share``: share of queries sent to the LLM with the highest mean cost.
    ``overspend_share``: share sent to an LLM although a strictly cheaper one had at least the same quality.
    """
    weights = np.asarray(weights, dtype=np.float64)
    top = int(np.argmax(cost.mean(axis=0)))
    # Missing cells (NaN) carry no weight and never count as a cheaper LLM that was as good.
    obtained = (weights * np.nan_to_num(quality, nan=0.0)).sum(1)
    overspent = _cheaper_as_good(quality, cost, obtained, (weights * cost).sum(1))
    return {"most_expensive_share": float(weights[:, top].mean()), "overspend_share": float(overspent.mean())}


def collapse_index(weights: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> float:
    """Routing Collapse Index (EquiRouter, papers.md §2) of decisions taken at the largest budget: the share of
    queries sent to the most expensive LLM although a strictly cheaper one had at least the same quality."""
    weights = np.asarray(weights, dtype=np.float64)
    top = int(np.argmax(cost.mean(axis=0)))
    return float((weights[:, top] * _cheaper_as_good(quality, cost, quality[:, top], cost[:, top])).mean())


def _cheaper_as_good(quality: np.ndarray, cost: np.ndarray, ref_quality: np.ndarray, ref_cost: np.ndarray):
    """Per query: does some LLM cost strictly less than ``ref_cost`` with at least ``ref_quality``? (Missing
    cells, NaN, compare false: an unobserved LLM is never that LLM; a missing ``ref_quality`` gives False.)"""
    with np.errstate(invalid="ignore"):
        return ((quality >= ref_quality[:, None] - 1e-12) & (cost < ref_cost[:, None] - 1e-15)).any(axis=1)


def evaluate_router(router, data: RoutingDataset, lams: Iterable[float] | None = None,
                    presets: dict[str, float] | None = None) -> list[dict]:
    """Rows of the ``eval --json`` schema for one fitted router: one row per λ, macro figures at top level.
    ``lams`` default to the named trade-offs ``presets`` (default: the router's own, `Router.presets_`); a row at
    one of them names it in ``scenario``."""
    rows = []
    name = getattr(router, "display_name", None) or router.name
    presets = presets or getattr(router, "presets_", None) or SCENARIOS
    for lam in (presets.values() if lams is None else lams):
        out = router.outcomes(data, float(lam))
        summary = summarize(out.perf, out.cost, data.tasks, float(lam))
        rows.append({
            "router": name,
            "lam": float(lam),
            "scenario": preset_name(float(lam), presets),
            **summary["macro"].to_dict(),
            "micro": summary["micro"].to_dict(),
            "per_task": {t: m.to_dict() for t, m in summary["per_task"].items()},
            "call_share": {llm: float(w) for llm, w in zip(data.llms, out.weights.mean(axis=0))},
            **collapse_stats(out.weights, data.quality, data.cost),
        })
    return rows


def nondecreasing_hull(costs: Sequence[float], perfs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of RouterBench's non-decreasing convex hull of (cost, perf) points, O(n log n).

    The upper convex hull (Andrew's monotone chain) up to its highest point; beyond it the curve stays flat,
    since a router can always pick that configuration without spending more."""
    pts = sorted(set(zip(np.asarray(costs, float).tolist(), np.asarray(perfs, float).tolist())))
    if not pts:
        raise ValueError("no points")
    upper: list[tuple[float, float]] = []
    for p in pts:
        # Keep only right turns (strictly concave chain); equal costs keep the highest perf automatically.
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) >= 0:
            upper.pop()
        upper.append(p)
    # Among equal costs the chain may still hold a lower point first; drop it.
    dedup: list[tuple[float, float]] = []
    for p in upper:
        if dedup and p[0] == dedup[-1][0]:
            dedup[-1] = max(dedup[-1], p, key=lambda q: q[1])
        else:
            dedup.append(p)
    peak = int(np.argmax([p[1] for p in dedup]))
    hull = dedup[: peak + 1]
    xs = np.array([p[0] for p in hull])
    ys = np.array([p[1] for p in hull])
    return xs, ys


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def aiq(costs: Sequence[float], perfs: Sequence[float], cost_range: tuple[float, float] | None = None) -> float:
    """Average Improvement in Quality (RouterBench): area under the non-decreasing convex hull divided by the
    cost range (default: the points' own min–max cost; pass a shared range to compare routers)."""
    xs, ys = nondecreasing_hull(costs, perfs)
    lo, hi = cost_range or (float(np.min(costs)), float(np.max(costs)))
    if hi <= lo:
        return float(ys.max())
    grid_x = np.concatenate([[lo], xs[(xs > lo) & (xs < hi)], [hi]])
    # Left of the cheapest point the router cannot operate: count it at the cheapest point's quality.
    grid_y = np.interp(grid_x, xs, ys, left=ys[0], right=ys[-1])
    return float(np.trapezoid(grid_y, grid_x) / (hi - lo))


def qnc(costs: Sequence[float], perfs: Sequence[float], ref_perf: float, ref_cost: float) -> float | None:
    """Cheapest cost on the front reaching ``ref_perf`` (the best single LLM's quality), relative to
    ``ref_cost`` (that LLM's cost). ``None`` when the router never reaches it."""
    costs, perfs = np.asarray(costs, float), np.asarray(perfs, float)
    reach = perfs >= ref_perf - 1e-12
    if not reach.any() or ref_cost <= 0:
        return None
    return float(costs[reach].min() / ref_cost)


def best_single_reference(data: RoutingDataset) -> dict:
    """The best single LLM on ``data`` by macro quality (over the queries where it is observed): the bar QNC
    measures against."""
    per_llm = []
    for j, llm in enumerate(data.llms):
        if not data.observed[:, j].any():
            continue
        s = single_llm_summary(data, j)["macro"]
        per_llm.append((s.perf, -s.cost, llm, s))
    perf, _, llm, s = max(per_llm)
    return {"llm": llm, "perf": s.perf, "cost": s.cost}


def curve_metrics(rows: list[dict], data: RoutingDataset, cost_range: tuple[float, float] | None = None) -> dict:
    """AIQ, QNC, peak quality and the Pareto front from one router's λ-sweep rows."""
    costs = [r["cost"] for r in rows]
    perfs = [r["perf"] for r in rows]
    ref = best_single_reference(data)
    front = pareto_front(costs, perfs)
    return {
        "aiq": aiq(costs, perfs, cost_range),
        "qnc": qnc(costs, perfs, ref["perf"], ref["cost"]),
        "peak_perf": float(max(perfs)),
        "reference_llm": ref["llm"],
        "front": [{"lam": rows[i]["lam"], "cost": costs[i], "perf": perfs[i]} for i in front],
    }
