"""RouteLLM's metrics for a strong/weak LLM pair (Ong et al. 2024): how much of the quality gap between always
calling the weak LLM and always calling the strong one a router recovers, as a function of how often it calls the
strong one.

A router's per-query margin (its score for the strong LLM minus its score for the weak one, at λ = 0) orders the
queries; sending the top k to the strong LLM and the rest to the weak one gives one point of the curve
(call share k/n, quality). PGR (performance gap recovered) = (quality − weak) / (strong − weak). **APGR** is the
area under PGR over call shares 0 … 1 (0.5 = no better than random, as a random order recovers the gap linearly);
**CPT(p)** is the smallest strong-LLM call share whose PGR reaches p. Queries a router scores alike are tied: their
gain is spread evenly over the tie (the expectation under random tie-breaking), so a router that cannot tell queries
apart scores exactly 0.5; so does `random` (its expectation over the draw, not one draw, which on MT-Bench ranged
0.32–0.70 across seeds). Figures are micro over queries (RouteLLM evaluates one benchmark at a time); queries with
a missing quality for either LLM are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def gain_curve(margin: np.ndarray, q_strong: np.ndarray, q_weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(call share, mean quality) for k = 0 … n queries sent to the strong LLM in decreasing-margin order."""
    margin, q_strong, q_weak = (np.asarray(a, dtype=np.float64) for a in (margin, q_strong, q_weak))
    order = np.argsort(-margin, kind="stable")
    gain = (q_strong - q_weak)[order]
    sorted_margin = margin[order]
    # Spread each tie group's gain evenly over the group (expected value when ties are broken at random).
    starts = np.flatnonzero(np.r_[True, sorted_margin[1:] != sorted_margin[:-1]])
    sums = np.add.reduceat(gain, starts) if len(gain) else gain
    sizes = np.diff(np.r_[starts, len(gain)])
    gain = np.repeat(sums / np.maximum(sizes, 1), sizes)
    n = len(gain)
    quality = (q_weak.sum() + np.r_[0.0, np.cumsum(gain)]) / max(n, 1)
    return np.arange(n + 1) / max(n, 1), quality


def strong_weak_metrics(margin: np.ndarray, q_strong: np.ndarray, q_weak: np.ndarray) -> dict[str, Any]:
    """APGR, CPT(50 %), CPT(80 %) and the curve (call share, quality, PGR at 11 shares) for one router and pair.

    PGR-based figures are None when the strong LLM is not better than the weak one on these queries."""
    margin, q_strong, q_weak = (np.asarray(a, dtype=np.float64) for a in (margin, q_strong, q_weak))
    keep = np.isfinite(q_strong) & np.isfinite(q_weak) & np.isfinite(margin)
    share, quality = gain_curve(margin[keep], q_strong[keep], q_weak[keep])
    weak, strong = quality[0], quality[-1]
    out: dict[str, Any] = {"n": int(keep.sum()), "left_out": int((~keep).sum()), "quality_weak": float(weak),
                           "quality_strong": float(strong), "apgr": None, "cpt50": None, "cpt80": None}
    grid = np.linspace(0, 1, 11)
    out["curve"] = [{"strong_share": float(s), "quality": float(np.interp(s, share, quality))} for s in grid]
    if strong - weak <= 1e-12 or len(share) < 2:
        return out
    if np.ptp(margin[keep]) == 0:  # no query preferred (e.g. `random`): the expected curve is the straight line
        pgr, out["apgr"] = share, 0.5  # exactly, not up to the rounding of the spread ties
    else:
        pgr = (quality - weak) / (strong - weak)
        out["apgr"] = float(np.trapezoid(pgr, share))
    for p, key in ((0.5, "cpt50"), (0.8, "cpt80")):
        reached = np.flatnonzero(pgr >= p - 1e-12)
        out[key] = float(share[reached[0]])
    for point in out["curve"]:
        point["pgr"] = (point["quality"] - weak) / (strong - weak)
    return out


def check_pair(llms: Sequence[str], strong: str, weak: str) -> None:
    """Fail on an LLM name the data does not have, before anything is trained or embedded (``eval --pair`` and
    ``bench --pair`` call it right after loading), not after the whole evaluation."""
    for name in (strong, weak):
        if name not in llms:
            raise ValueError(f"--pair: {name!r} is not an LLM of this data set; its LLMs are {', '.join(llms)}")
    if strong == weak:
        raise ValueError(f"--pair: the strong and the weak LLM are both {strong!r}; name two different LLMs")


def router_margin(router, data, strong: str, weak: str) -> np.ndarray:
    """The router's per-query preference for ``strong`` over ``weak`` at λ = 0: the difference of its scores
    (predicted quality, log-probability or vote, whatever the router ranks by)."""
    llms = list(data.llms)
    check_pair(llms, strong, weak)
    if router.random_pick:  # its pick is a uniform draw: in expectation it prefers no query, every margin ties
        return np.zeros(len(data))
    x = data.embeddings if router.uses_embeddings and data.embeddings is not None else data
    scores = router.predict_scores(x, 0.0, context=data.tasks if router.uses_context else None)
    return scores[:, llms.index(strong)] - scores[:, llms.index(weak)]


def pair_report(router, data, strong: str, weak: str) -> dict[str, Any]:
    """`strong_weak_metrics` of a fitted router on labelled ``data`` for the pair (strong, weak), pooled over the
    queries and, when ``data`` has several tasks, per task (``per_task``: APGR, CPT and counts, no curve), since
    RouteLLM reports one benchmark at a time and a pooled figure can hide a task where the router does worse."""
    llms = list(data.llms)
    margin = router_margin(router, data, strong, weak)
    q_strong, q_weak = data.quality[:, llms.index(strong)], data.quality[:, llms.index(weak)]
    out = {"strong": strong, "weak": weak, **strong_weak_metrics(margin, q_strong, q_weak)}
    tasks = list(dict.fromkeys(data.tasks.tolist()))
    if len(tasks) > 1:
        out["per_task"] = {}
        for task in tasks:
            rows = data.tasks == task
            figures = strong_weak_metrics(margin[rows], q_strong[rows], q_weak[rows])
            out["per_task"][str(task)] = {k: figures[k] for k in PAIR_FIGURES}
    return out


#: What a report keeps of `strong_weak_metrics` per run and per task (the curve stays out).
PAIR_FIGURES = ("apgr", "cpt50", "cpt80", "n", "left_out", "quality_weak", "quality_strong")
