"""Budgets you can trust: pick λ on your own unlabelled traffic, and assign a whole batch under a dollar budget.

λ means nothing to an operator; a budget ("at most 2 USD per 1,000 queries") or a call share ("30 % of calls to
GPT-4") does. `calibrate_lam` routes the user's own queries (no labels needed) at many λ and returns the λ whose
expected spend per 1,000 queries is the highest one not above the target (or whose share of calls to an LLM is
closest to the target), with a bootstrap confidence interval over the queries. `save_calibration` writes that λ
into a model directory as its default, so ``route`` and ``serve`` use it.

`route_batch_budget` goes further for offline batches: one LLM per query, maximising total predicted quality subject
to the batch's total predicted cost ≤ the budget (Lagrangian relaxation + greedy fill, or an exact multiple-choice
knapsack for small batches), compared with the best single λ that spends no more.

Costs are what ``router.predict_costs`` expects (per LLM mean cost unless the router predicts per-query cost); the
intervals cover the sampling of queries, so they are only as good as those cost predictions.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.objective import COST_SCALE, argmax_cheapest
from radialrouter.data.dataset import DataError

#: λ values tried before bisection refines the best bracket (USD per 1,000 queries; spans "cost is irrelevant"
#: to "always the cheapest LLM" for quality in [0, 1] and prices of 0.01–100 USD per 1,000 queries).
LAM_GRID: np.ndarray = np.concatenate([[0.0], np.geomspace(1e-4, 1e3, 36)])


class CalibrationError(ValueError):
    """A target no λ can reach (the message gives the reachable range), or unusable queries."""


@dataclass
class Calibration:
    """The calibrated λ and what it is expected to do on traffic like the calibration queries.

    Fields are named by unit: ``expected_cost_per_1k_usd`` and its interval are USD per 1,000 queries (the unit of
    λ and of budgets); ``share`` is the share of calls to ``share_llm`` (the target LLM for share targets,
    otherwise the most expensive LLM of the pool)."""

    lam: float
    expected_cost_per_1k_usd: float
    ci_low_per_1k_usd: float
    ci_high_per_1k_usd: float
    share: float
    share_ci: tuple[float, float]
    share_llm: str
    n_queries: int
    target: dict[str, Any]
    confidence: float = 0.95
    call_share: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # Unit-less names of earlier releases, kept so existing scripts keep working (same values, USD per 1,000).
    @property
    def expected_cost(self) -> float:
        return self.expected_cost_per_1k_usd

    @property
    def ci_low(self) -> float:
        return self.ci_low_per_1k_usd

    @property
    def ci_high(self) -> float:
        return self.ci_high_per_1k_usd


def _inputs(router, queries: Any) -> Any:
    """Encode once (embedding routers) so routing at dozens of λ never re-encodes."""
    router._check_fitted()
    return router._inputs(queries)


def _parse_share(router, target_share: dict[str, float]) -> tuple[int, float]:
    if len(target_share) != 1:
        raise CalibrationError(f"target_share must name exactly one LLM, got {target_share!r}")
    (llm, share), = target_share.items()
    if llm not in router.llms_:
        raise CalibrationError(f"target_share names unknown LLM {llm!r}; this router knows {router.llms_}")
    if not 0.0 <= float(share) <= 1.0:
        raise CalibrationError(f"target share for {llm!r} must be in [0, 1], got {share!r}")
    return router.llms_.index(llm), float(share)


def calibrate_lam(
    router,
    queries: Any,
    *,
    target_cost: float | None = None,
    target_share: dict[str, float] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    lam_grid: np.ndarray | None = None,
    costs: np.ndarray | None = None,
) -> Calibration:
    """Choose λ on unlabelled ``queries`` (texts, embeddings or a `RoutingDataset`) for a spending target.

    ``target_cost`` (USD per 1,000 queries): the λ with the highest expected spend that is not above it (ties go to
    the smaller λ, i.e. more quality). ``target_share`` (``{llm: share}``): the λ whose share of calls to that LLM
    is closest to the target. A target no λ reaches raises `CalibrationError` with the reachable range — a budget
    is never silently exceeded; a budget above the λ = 0 spend returns λ = 0 (it does not bind).

    ``costs`` ((n, n_llms) USD per query) replaces ``router.predict_costs`` — e.g. from a router that predicts
    per-query cost, or from your own token counts — for routers that only know each LLM's mean cost. The default
    grid stops at a λ-conditioned router's ``lam_max``: beyond the λ it was trained on, its choices are
    extrapolation.
    """
    if (target_cost is None) == (target_share is None):
        raise CalibrationError("give exactly one of target_cost (USD per 1,000 queries) or target_share")
    if target_cost is not None and not (np.isfinite(target_cost) and target_cost > 0):
        raise CalibrationError(f"target_cost must be a positive number of USD per 1,000 queries, got {target_cost!r}")
    share_j, share_t = _parse_share(router, target_share) if target_share is not None else (None, None)
    x = _inputs(router, queries)
    cost = np.asarray(router.predict_costs(x) if costs is None else costs, dtype=np.float64) * COST_SCALE
    n = len(cost)
    if cost.shape != (n, len(router.llms_)) or (costs is not None and len(costs) != len(x)):
        raise CalibrationError(f"costs must have shape (n_queries, n_llms) = ({len(x)}, {len(router.llms_)}); "
                               f"got {np.shape(costs)}")
    if n == 0:
        raise CalibrationError("no queries to calibrate on")
    rows = np.arange(n)
    cache: dict[float, np.ndarray] = {}

    def choose(lam: float) -> np.ndarray:
        if lam not in cache:
            cache[lam] = router.predict(x, lam)
        return cache[lam]

    def spend(lam: float) -> float:
        return float(cost[rows, choose(lam)].mean())

    def share(lam: float) -> float:
        return float((choose(lam) == share_j).mean())

    grid = np.asarray(_default_grid(router) if lam_grid is None else lam_grid, dtype=np.float64)
    if np.array_equal(choose(float(grid[0])), choose(float(grid[-1]))):
        raise CalibrationError(
            f"the {router.name!r} router routes these queries the same at every λ (λ = {grid[0]:g} and {grid[-1]:g} "
            f"give identical choices){_lam_note(router)}, so no λ can move its spend; calibrate a router whose "
            f"decisions depend on λ"
        )
    if target_cost is not None:
        lam = _calibrate_cost(grid, spend, float(target_cost))
        target = {"cost_per_1k": float(target_cost)}
    else:
        lam = _calibrate_share(grid, share, share_t)
        target = {"share": {router.llms_[share_j]: share_t}}
    chosen = choose(lam)
    report_j = share_j if share_j is not None else int(np.argmax(router.mean_cost_))
    per_query_cost = cost[rows, chosen]
    per_query_hit = (chosen == report_j).astype(np.float64)
    (c_lo, c_hi), (s_lo, s_hi) = _bootstrap_ci([per_query_cost, per_query_hit], n_boot, confidence, seed)
    counts = np.bincount(chosen, minlength=len(router.llms_)) / n
    return Calibration(
        lam=float(lam), expected_cost_per_1k_usd=float(per_query_cost.mean()), ci_low_per_1k_usd=c_lo,
        ci_high_per_1k_usd=c_hi,
        share=float(per_query_hit.mean()), share_ci=(s_lo, s_hi), share_llm=router.llms_[report_j], n_queries=n,
        target=target, confidence=confidence,
        call_share={llm: float(s) for llm, s in zip(router.llms_, counts) if s > 0},
    )


def _default_grid(router) -> np.ndarray:
    """`LAM_GRID`, cut at ``lam_max`` (kept as the last point) for a router conditioned on λ up to there."""
    if getattr(router, "lam_conditioned", False) and getattr(router, "lam_max", None):
        top = float(router.lam_max)
        return np.append(LAM_GRID[LAM_GRID < top], top)
    return LAM_GRID


def _lam_note(router) -> str:
    return f": it was trained for the single λ = {router.lam:g}" if getattr(router, "lam_at_fit", False) else ""


def _calibrate_cost(grid: np.ndarray, spend, target: float) -> float:
    """Highest spend ≤ target: over the grid, then by bisection inside every bracket where the spend falls from
    above the target to below it (a learned router's spend need not fall monotonically with λ, and can drop
    steeply when many queries switch LLM at once)."""
    values = np.array([spend(lam) for lam in grid])
    feasible = values <= target + 1e-12
    if not feasible.any():
        raise CalibrationError(
            f"no λ keeps the expected spend at or below {target:.4g} USD per 1,000 queries on these queries: the "
            f"cheapest routing found (λ = {grid[np.argmin(values)]:.4g}) spends {values.min():.4g}. Raise the "
            f"target or remove expensive LLMs from the pool."
        )
    best_i = max(np.flatnonzero(feasible), key=lambda i: (values[i], -grid[i]))
    best, best_spend = float(grid[best_i]), float(values[best_i])
    for i in np.flatnonzero(feasible[1:] & ~feasible[:-1]) + 1:
        lo, hi = float(grid[i - 1]), float(grid[i])  # spend(lo) > target ≥ spend(hi)
        for _ in range(40):
            mid = 0.5 * (lo + hi) if lo == 0 else float(np.sqrt(lo * hi))
            s = spend(mid)
            if s <= target + 1e-12:
                hi = mid
                if s > best_spend or (s == best_spend and mid < best):
                    best, best_spend = mid, s
            else:
                lo = mid
            if hi - lo <= 1e-3 * hi:
                break
    return best


def _calibrate_share(grid: np.ndarray, share, target: float) -> float:
    """Share closest to the target over the grid, refined by bisection between neighbours that straddle it."""
    values = np.array([share(lam) for lam in grid])
    lo_s, hi_s = values.min(), values.max()
    if not lo_s - 1e-9 <= target <= hi_s + 1e-9:
        raise CalibrationError(
            f"no λ gives a call share of {target:.3f}: on these queries it ranges from {lo_s:.3f} to {hi_s:.3f}"
        )
    best_i = int(np.argmin(np.abs(values - target)))
    best, best_gap = float(grid[best_i]), abs(values[best_i] - target)
    for i in (best_i - 1, best_i):
        if i < 0 or i + 1 >= len(grid) or (values[i] - target) * (values[i + 1] - target) > 0:
            continue
        lo, hi = float(grid[i]), float(grid[i + 1])
        for _ in range(40):
            mid = 0.5 * (lo + hi) if lo == 0 else float(np.sqrt(lo * hi))
            s = share(mid)
            if abs(s - target) < best_gap:
                best, best_gap = mid, abs(s - target)
            if (s - target) * (values[i] - target) > 0:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-3 * hi:
                break
    return best


def _bootstrap_ci(
    series: list[np.ndarray], n_boot: int, confidence: float, seed: int
) -> list[tuple[float, float]]:
    """Percentile intervals of the mean of each per-query series, resampling queries (same draws for all)."""
    if not 0 < confidence < 1:
        raise CalibrationError(f"confidence must be in (0, 1), got {confidence!r}")
    n = len(series[0])
    if n_boot < 1:
        return [(float(s.mean()), float(s.mean())) for s in series]
    rng = np.random.default_rng(seed)
    means = np.empty((len(series), n_boot))
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for k, s in enumerate(series):
            means[k, start : start + len(idx)] = s[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return [(float(np.quantile(m, alpha)), float(np.quantile(m, 1 - alpha))) for m in means]


# ---------------------------------------------------------------------------------------------- persistence
def save_calibration(directory: str | Path, calibration: Calibration) -> Path:
    """Make ``calibration.lam`` the model's default λ (pool.json ``default_lam``) and record how it was chosen in
    ``calibration.json`` (target, λ, interval, date, number of queries); earlier records are kept as history."""
    directory = Path(directory)
    pool_path = directory / "pool.json"
    if not pool_path.exists():
        raise FileNotFoundError(f"{directory}: not a router directory (no pool.json)")
    pool = json.loads(pool_path.read_text())
    pool["default_lam"] = calibration.lam
    pool_path.write_text(json.dumps(pool, indent=2) + "\n")
    record = {**calibration.to_dict(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    cal_path = directory / "calibration.json"
    old = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    history = [*old.get("history", []), *([old["current"]] if old.get("current") else [])]
    cal_path.write_text(json.dumps({"current": record, "history": history}, indent=2) + "\n")
    return cal_path


def current_calibration(directory: str | Path) -> dict[str, Any] | None:
    """The calibration record that set ``directory``'s default λ (``calibration.json`` → ``current``), or None when
    the model was never calibrated or its calibration was retired (`retire_calibration`)."""
    path = Path(directory) / "calibration.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("current") or None


def retire_calibration(source: str | Path, target: str | Path, reason: str) -> Path | None:
    """Write ``target``'s ``calibration.json`` with ``source``'s records and no current calibration: the current
    one moves to ``history`` with ``reason`` (e.g. the pool changed), so nothing claims that the model's default λ
    is calibrated any more, while how it once was stays on record. None when ``source`` has no calibration.json."""
    path = Path(source) / "calibration.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    history = list(old.get("history", []))
    if old.get("current"):
        retired = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        history.append({**old["current"], "retired": retired, "retired_because": reason})
    out = Path(target) / "calibration.json"
    out.write_text(json.dumps({"current": None, "history": history}, indent=2) + "\n")
    return out


def read_queries(path: str | Path, prompt_column: str | None = None) -> list[str]:
    """Prompts from a ``.txt`` file (one per line), JSONL with a ``prompt`` field, or parquet/CSV with a prompt
    column. Blank lines of a text file are skipped with a warning; an empty prompt in a table is an error."""
    from radialrouter.data.loaders import PROMPT_COLUMNS, read_table

    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.exists():
            raise DataError(f"{path}: no such file")
        lines = []
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: line {number}, column {exc.start + 1}: byte {raw[exc.start]:#04x} is not "
                                "UTF-8 text; save the file as UTF-8") from None
        lines[:1] = [lines[0].removeprefix("\ufeff")] if lines else []
        prompts = [line for line in lines if line.strip()]
        if len(prompts) < len(lines):
            warnings.warn(f"{path}: skipped {len(lines) - len(prompts)} blank line(s)", stacklevel=2)
        if not prompts:
            raise DataError(f"{path}: no prompts (the file is empty)")
        return prompts
    df = read_table(path)
    column = prompt_column or next((c for c in PROMPT_COLUMNS if c in df.columns), None)
    if column is None or column not in df.columns:
        raise DataError(f"{path}: no prompt column; expected one of {list(PROMPT_COLUMNS)}, got {list(df.columns)}")
    values = df[column]
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{path}: row {i + 1}, column {column!r}: the prompt is empty ({int(empty.sum())} such rows)")
    return values.astype(str).tolist()


# ---------------------------------------------------------------------------------------------- batch budgets
@dataclass
class BudgetPlan:
    """One LLM per query for a batch under a budget. Costs in USD for the whole batch; qualities are the router's
    predictions (see `route_batch_budget` for which)."""

    choices: np.ndarray
    llms: list[str]
    method: str
    budget_usd: float
    total_cost: float
    total_quality: float
    lam: float
    single_lam: float
    single_lam_cost: float
    single_lam_quality: float

    @property
    def assignments(self) -> list[str]:
        return [self.llms[j] for j in self.choices]

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in {"choices", "llms"}}


def predicted_quality(router, x: Any) -> np.ndarray:
    """The quality proxy for batch budgets: ``router.predict_quality`` when the router has it, else its scores at
    λ = 0 (probabilities or logits of a quality-first router rank LLMs by expected quality, which is what the
    assignment trades against cost)."""
    if hasattr(router, "predict_quality"):
        return np.asarray(router.predict_quality(x), dtype=np.float64)
    return np.asarray(router.predict_scores(x, 0.0), dtype=np.float64)


def route_batch_budget(
    router,
    queries: Any,
    budget_usd: float,
    *,
    exact_max_cells: int = 4_000_000,
    resolution: int = 2000,
) -> BudgetPlan:
    """Assign one LLM per query maximising total predicted quality with total predicted cost ≤ ``budget_usd``.

    Lagrangian relaxation: bisection on the multiplier λ of ``quality − λ·cost`` finds the cheapest-feasible
    per-query argmax, then leftover budget buys the upgrades with the best quality gain per dollar. When
    ``n × resolution × n_llms ≤ exact_max_cells`` an exact multiple-choice knapsack (dynamic programme over cost
    discretised to ``budget / resolution``, rounded up so it is never over budget) is solved too and the better plan
    kept. The baseline is the router's own single λ (``router.predict``) with the highest spend within the budget.
    """
    x = _inputs(router, queries)
    quality = predicted_quality(router, x)
    cost = np.asarray(router.predict_costs(x), dtype=np.float64)
    n, m = quality.shape
    if not (np.isfinite(budget_usd) and budget_usd > 0):
        raise CalibrationError(f"budget_usd must be a positive number, got {budget_usd!r}")
    floor = float(cost.min(axis=1).sum())
    if floor > budget_usd:
        raise CalibrationError(
            f"a budget of {budget_usd:.4g} USD cannot cover these {n} queries: even the cheapest LLM for every "
            f"query costs {floor:.4g} USD"
        )
    rows = np.arange(n)
    choice, lam = _lagrangian(quality, cost, budget_usd)
    choice = _greedy_fill(quality, cost, choice, budget_usd)
    method = "lagrangian+greedy"
    if n * m * resolution <= exact_max_cells:
        exact = _knapsack(quality, cost, budget_usd, resolution)
        if quality[rows, exact].sum() > quality[rows, choice].sum() + 1e-12:
            choice, method = exact, "knapsack"
    single = _single_lam_baseline(router, x, cost, budget_usd)
    return BudgetPlan(
        choices=choice, llms=list(router.llms_), method=method, budget_usd=float(budget_usd),
        total_cost=float(cost[rows, choice].sum()), total_quality=float(quality[rows, choice].sum()),
        lam=lam, single_lam=single[0], single_lam_cost=float(cost[rows, single[1]].sum()),
        single_lam_quality=float(quality[rows, single[1]].sum()),
    )


def _lagrangian(quality: np.ndarray, cost: np.ndarray, budget: float) -> tuple[np.ndarray, float]:
    """Smallest multiplier (per 1,000 queries, like λ) whose per-query argmax of quality − λ·cost fits the budget."""
    rows = np.arange(len(quality))
    cost_k = cost * COST_SCALE

    def pick(lam: float) -> np.ndarray:
        return argmax_cheapest(quality - lam * cost_k, cost)

    if cost[rows, pick(0.0)].sum() <= budget:
        return pick(0.0), 0.0
    hi = 1.0
    while cost[rows, pick(hi)].sum() > budget:
        hi *= 4
        if hi > 1e12:  # the cheapest-per-query assignment fits (checked by the caller); ties can need huge λ
            return np.argmin(cost, axis=1), float("inf")
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cost[rows, pick(mid)].sum() <= budget:
            hi = mid
        else:
            lo = mid
    return pick(hi), hi


def _greedy_fill(quality: np.ndarray, cost: np.ndarray, choice: np.ndarray, budget: float) -> np.ndarray:
    """Spend what the Lagrangian left: repeatedly take the affordable upgrade with the best quality gain per dollar."""
    choice = choice.copy()
    rows = np.arange(len(quality))
    while True:
        left = budget - cost[rows, choice].sum()
        gain = quality - quality[rows, choice][:, None]
        extra = cost - cost[rows, choice][:, None]
        ok = (gain > 1e-12) & (extra <= left + 1e-15)
        if not ok.any():
            return choice
        ratio = np.where(ok, gain / np.maximum(extra, 1e-15), -np.inf)
        i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        choice[i] = j


def _knapsack(quality: np.ndarray, cost: np.ndarray, budget: float, resolution: int) -> np.ndarray:
    """Exact multiple-choice knapsack over costs rounded up to ``budget / resolution`` (so always feasible)."""
    n, m = quality.shape
    unit = budget / resolution
    weight = np.ceil(cost / unit - 1e-9).astype(np.int64)
    neg = -np.inf
    dp = np.full(resolution + 1, neg)
    dp[0] = 0.0
    back = np.zeros((n, resolution + 1), dtype=np.int16)
    for i in range(n):
        new = np.full(resolution + 1, neg)
        for j in range(m):
            w = weight[i, j]
            if w > resolution:
                continue
            cand = np.full(resolution + 1, neg)
            cand[w:] = dp[: resolution + 1 - w] + quality[i, j]
            better = cand > new
            new[better] = cand[better]
            back[i, better] = j
        dp = new
    if not np.isfinite(dp).any():  # rounding up made the problem infeasible: the Lagrangian plan stands
        return np.argmin(cost, axis=1)
    b = int(np.argmax(dp))
    choice = np.zeros(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        choice[i] = back[i, b]
        b -= weight[i, choice[i]]
    return choice


def _single_lam_baseline(router, x: Any, cost: np.ndarray, budget: float) -> tuple[float, np.ndarray]:
    """The router's own routing at the single λ spending the most without exceeding the budget."""
    rows = np.arange(len(cost))
    target = budget / len(cost) * COST_SCALE
    try:
        lam = _calibrate_cost(LAM_GRID, lambda lam: float(cost[rows, router.predict(x, lam)].mean() * COST_SCALE),
                              target)
    except CalibrationError:
        lam = float(LAM_GRID[-1])
    return lam, router.predict(x, lam)
