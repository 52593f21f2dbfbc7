"""The routing objective: Score = quality − λ·cost, with cost in USD per 1,000 queries.

Datasets store cost in USD *per query* (what logs record); every λ in this package is in the paper's unit,
USD per 1,000 queries, so λ = 0.02 means "one quality point is worth 50 dollars per thousand queries".
"""

from __future__ import annotations

import math

import numpy as np

#: Multiply a per-query USD cost by this to get USD per 1,000 queries, the unit λ is expressed in.
COST_SCALE = 1000.0

#: The paper's three scenarios (Performance First, Balance, Cost First) in its units: what the named trade-offs
#: mean for routers saved before presets existed, and what the reproduction of the paper's table uses.
SCENARIOS: dict[str, float] = {"performance-first": 0.0, "balance": 0.02, "cost-first": 0.1}

#: The named trade-offs as multiples of the pool's price of quality (`price_of_quality`): scale-free, so they mean
#: the same on any data. Chosen so that on RouterBench they land on the paper's 0.02 and 0.1 (0.0204 and 0.102).
PRESET_FRACTIONS: dict[str, float] = {"performance-first": 0.0, "balance": 1 / 3, "cost-first": 5 / 3}

#: The one named trade-off of quality-only data (no cost column, or every cost 0): Score is quality at every λ,
#: so Balance and Cost First do not exist there, and every trade-off name resolves to it.
QUALITY_ONLY: dict[str, float] = {"performance-first": 0.0}

#: Short labels used in tables.
SCENARIO_LABELS: dict[float, str] = {0.0: "PF", 0.02: "BA", 0.1: "CF"}


def utility(quality: np.ndarray, cost_usd: np.ndarray, lam: float) -> np.ndarray:
    """Per-query, per-LLM Score: ``quality − λ · cost_per_1k`` (cost given in USD per query)."""
    return np.asarray(quality, dtype=np.float64) - lam * COST_SCALE * np.asarray(cost_usd, dtype=np.float64)


def observed_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over the non-NaN entries along ``axis``; NaN where there are none. `np.nanmean` gives the same numbers
    but warns "Mean of empty slice" for an LLM observed on no row (e.g. none in a training split), which the CLI
    printed as if something had failed."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    counts = known.sum(axis=axis)
    sums = np.where(known, values, 0.0).sum(axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def price_of_quality(quality: np.ndarray, cost_usd: np.ndarray) -> float:
    """The pool's exchange rate between quality and cost, in λ's units: ``(q_best − q_cheapest) / (c_best −
    c_cheapest)`` over per-LLM means (missing cells ignored; cost per 1,000 queries), where *best* is the LLM with
    the highest mean quality and *cheapest* the one with the lowest mean cost. At λ equal to it, always calling
    the best LLM and always calling the cheapest score the same on average. 0 when the best LLM is also the
    cheapest (nothing to trade)."""
    quality = np.asarray(quality, dtype=np.float64)
    cost = np.asarray(cost_usd, dtype=np.float64) * COST_SCALE
    q, c = observed_mean(quality), observed_mean(cost)
    if not (np.isfinite(q).any() and np.isfinite(c).any()):
        raise ValueError("price_of_quality needs at least one LLM with known quality and cost")
    best, cheapest = int(np.nanargmax(q)), int(np.nanargmin(c))
    dq, dc = q[best] - q[cheapest], c[best] - c[cheapest]
    return float(dq / dc) if dc > 0 and dq > 0 else 0.0


def is_quality_only(cost_usd: np.ndarray) -> bool:
    """Whether every known cost is 0 (quality-only data: λ changes no Score, so it must change no pick)."""
    cost = np.asarray(cost_usd, dtype=np.float64)
    return not bool(((cost != 0) & ~np.isnan(cost)).any())


def is_quality_only_presets(presets: dict[str, float] | None) -> bool:
    """Whether ``presets`` (a router's `presets_`, a report's ``meta``) are those of quality-only data."""
    return presets is not None and dict(presets) == QUALITY_ONLY


def tradeoff_presets(quality: np.ndarray, cost_usd: np.ndarray) -> dict[str, float]:
    """The named trade-offs for a pool (λ = `PRESET_FRACTIONS` × `price_of_quality`, 3 significant digits),
    resolved on training data and stored with the router, so ``balance`` is a balance on any price scale.
    Quality-only data has one: `QUALITY_ONLY`."""
    if is_quality_only(cost_usd):
        return dict(QUALITY_ONLY)
    scale = price_of_quality(quality, cost_usd)
    return {name: float(f"{fraction * scale:.3g}") for name, fraction in PRESET_FRACTIONS.items()}


def preset_name(lam: float, presets: dict[str, float]) -> str | None:
    """The preset ``lam`` is (``balance`` …), or None."""
    return next((name for name, value in presets.items() if abs(value - lam) <= 1e-12), None)


def resolve_lam(value: float | str | None, default: float = 0.0, presets: dict[str, float] | None = None) -> float:
    """Accept a number (λ in USD per 1,000 queries), a numeric string or a trade-off name (``balance``,
    ``cost-first``, ``PF`` …), resolved with ``presets`` (a router's, see `tradeoff_presets`) or, without them, the
    paper's `SCENARIOS`."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        lam = float(value)
    else:
        key = str(value).strip().lower().replace("_", "-")
        aliases = {"pf": "performance-first", "ba": "balance", "cf": "cost-first"}
        key = aliases.get(key, key)
        table = SCENARIOS if presets is None else presets
        if key in table:
            return table[key]
        if is_quality_only_presets(presets) and key in SCENARIOS:  # quality only: every trade-off is this one
            return QUALITY_ONLY["performance-first"]
        try:
            lam = float(key)
        except ValueError:
            names = ", ".join(SCENARIOS)
            raise ValueError(f"λ must be a number ≥ 0 or one of {names}; got {value!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"λ must be a finite number ≥ 0; got {value!r}")
    return lam


def resolve_lams(values: list[float | str], presets: dict[str, float] | None = None) -> list[float]:
    """`resolve_lam` of each value, each λ once, in order. Quality-only presets (`QUALITY_ONLY`) give the one
    trade-off, λ = 0, whatever is asked: without costs every λ scores and routes alike."""
    lams = [resolve_lam(v, presets=presets) for v in values]
    return list(QUALITY_ONLY.values()) if is_quality_only_presets(presets) else list(dict.fromkeys(lams))


def target_distribution(quality: np.ndarray, cost_usd: np.ndarray, lam: float, tau: float) -> np.ndarray:
    """Softmax of the per-LLM Score at temperature τ: the KL target of RadialRouter (papers.md §1). A missing
    quality cell (NaN) gets probability 0: the softmax runs over each query's observed LLMs only."""
    s = utility(quality, cost_usd, lam) / tau
    s = np.where(np.isfinite(s), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


#: ``tau="auto"`` (RadialRouter): the target temperatures tried, as multiples of `utility_spread` on the training
#: data, so that the grid sits on the pool's own scale of quality − λ·cost (as `PRESET_FRACTIONS` do for λ).
TAU_FRACTIONS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)


def utility_spread(quality: np.ndarray, cost_usd: np.ndarray, lams: tuple[float, ...] | list[float]) -> float:
    """The typical spread of Score across the LLMs of one query: the root mean square of ``quality − λ·cost`` about
    each query's mean over its observed LLMs, averaged over ``lams``. About 0.4 on 0/1 labels at λ = 0; it grows
    with λ on a pool whose prices differ. 0 when every LLM scores the same on every query."""
    spreads = []
    for lam in lams:
        u = utility(quality, cost_usd, lam)
        known = np.isfinite(u)
        if known.any():
            row_mean = observed_mean(np.where(known, u, np.nan), axis=1)[:, None]
            spreads.append(float(np.sqrt(np.mean(((u - row_mean) ** 2)[known]))))
    return float(np.mean(spreads)) if spreads else 0.0


def tau_grid(quality: np.ndarray, cost_usd: np.ndarray, lams: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """`TAU_FRACTIONS` × `utility_spread` (3 significant digits): the target temperatures ``tau="auto"`` tries.
    ``(1.0,)`` when the spread is 0 (every target is uniform whatever τ)."""
    spread = utility_spread(quality, cost_usd, lams)
    if not spread > 0:
        return (1.0,)
    return tuple(float(f"{fraction * spread:.3g}") for fraction in TAU_FRACTIONS)


def _cost_rows(cost: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``cost`` as float64 of ``shape``: one cost row repeated for every query (the method ``repeat`` is a C call,
    ``broadcast_to`` a Python one — this is on the routing path)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape == shape:
        return cost
    return cost.reshape(1, -1).repeat(shape[0], axis=0) if cost.size == shape[-1] else np.broadcast_to(cost, shape)


def argmax_cheapest(scores: np.ndarray, cost: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """Row-wise argmax of ``scores`` with ties broken towards the lower ``cost`` (then the lower index).

    ``cost`` may be (n, m) or (m,). Non-finite scores (masked candidates) are never chosen unless a row is all
    masked, which is an error.
    """
    scores = np.asarray(scores, dtype=np.float64)
    cost = _cost_rows(cost, scores.shape)
    best = np.max(scores, axis=1, keepdims=True)
    if not np.all(np.isfinite(best)):
        raise ValueError("every query needs at least one candidate LLM with a finite score")
    tied = scores >= best - atol
    masked_cost = np.where(tied, cost, np.inf)
    return np.argmin(masked_cost, axis=1)


def rank_cheapest_first(scores: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Row-wise order of LLMs, best score first, equal scores cheaper first."""
    scores = np.asarray(scores, dtype=np.float64)
    cost = _cost_rows(cost, scores.shape)
    # lexsort sorts each row (the last axis) by the last key first: primary −score, secondary cost.
    return np.lexsort((cost, -scores)) if len(scores) else np.zeros((0, 0), int)
