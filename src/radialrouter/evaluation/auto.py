"""``radialrouter train --router auto``: choose the router for the user's data by K-fold cross-validation on the
training split, then refit the choice on the whole training split.

No router wins everywhere (see the benchmark reports: MLP, kNN and RadialRouter trade places per data set), so a
user who does not want to read those tables gets the comparison run on their own data. One validation split is
too noisy for that choice (issue #23: it picked EquiRouter on RouteLLM seed 0, the least seed-stable router
there), so:

- **Folds.** `radialrouter.data.splits.grouped_folds` deals the *training* rows into K seeded folds (default 5),
  grouped by prompt text and stratified by task like the train/test split. Each candidate is fitted K times on
  K − 1 folds (the validation split, disjoint from every fold, for its early stopping as in ``train``) and scored
  on the fold it did not see. The test split is never read: `select_router` refuses training data with test rows.
- **Score.** On each held-out fold a candidate's score is the mean of its Score (macro over tasks, as everywhere)
  at the named trade-offs (performance-first, balance, cost-first, resolved once on the whole training split), or
  at ``lam`` alone when the user names one. The mean rather than the worst of the three: Score is
  quality − λ·cost, so the worst raw Score is always cost-first's (it has the largest λ) and "worst" would really
  mean "cost-first only"; the mean weighs the three trade-offs equally in the same units (RadialRouter's own early
  stopping uses the same mean), and the per-trade-off fold means are recorded too, so the per-trade-off picture
  can be read from the record.
- **Mean ± SE.** A candidate's figure is the mean of its K fold scores and their standard error, the sample
  standard deviation (ddof = 1) over √K. Folds share training rows, so this SE is somewhat optimistic (Bengio &
  Grandvalet 2004); it is a noise scale for the rule below, not a confidence interval.
- **Ensemble.** An ``ensemble`` candidate whose members are candidates too stacks their fits of the same fold
  (`EnsembleRouter.fit_on_members`: the fits it would make itself), so it costs its weight fits only.
- **One-SE rule.** Among the candidates whose mean is within one SE (the best candidate's) of the best mean, the
  simplest by `COMPLEXITY_ORDER` is chosen: a more complex router has to beat the simpler ones by more than the
  noise of the comparison.

Candidates default to `AUTO_CANDIDATES` that are registered (``ensemble`` only when a module registered it).
Candidates trained for one λ (``lam_at_fit``) are trained at ``lam`` (default balance). The winner is saved with
the comparison table (``training.json`` → ``auto``), so the choice can be audited later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radialrouter.data.dataset import RoutingDataset
from radialrouter.evaluation.metrics import evaluate_router
from radialrouter.routers import available_routers, router_class
from radialrouter.routers.base import Router, RouterError
from radialrouter.routers.ensemble import fit_reusing_members
from radialrouter.routers.registry import make_seeded

#: Tried by default, those registered: the routers cheap to fit (seconds per fit on RouterBench) that led or
#: placed in the benchmark tables, RadialRouter, and the ensemble once a module registers it.
AUTO_CANDIDATES: tuple[str, ...] = ("knn", "mlp", "mf", "equi", "radial", "ensemble")

#: Simplest first: what the one-SE rule prefers when candidates are within noise. References (no model of the
#: query), then kNN (no training, one hyperparameter), the small per-LLM heads (MLP; MF adds learned LLM
#: embeddings), the routers trained for one λ, EquiRouter, GraphRouter, RadialRouter (the largest network), and an
#: ensemble of several routers last. A name not listed counts as more complex than all of these.
COMPLEXITY_ORDER: tuple[str, ...] = ("random", "best-single", "task-best", "knn", "hybrid", "frugal", "cosine",
                                     "mlp", "mf", "routerdc", "equi", "graph", "radial", "ensemble")

#: Folds of the training split by default.
DEFAULT_FOLDS = 5

#: Routers that read the labels of the queries they route: they cannot route new queries, so never a candidate.
NOT_CANDIDATES = frozenset({"oracle"})


def default_candidates() -> list[str]:
    """`AUTO_CANDIDATES` that are registered now (``ensemble`` only when some module has registered it)."""
    known = set(available_routers())
    return [name for name in AUTO_CANDIDATES if name in known]


def complexity_rank(name: str) -> int:
    """Position in `COMPLEXITY_ORDER`; unlisted names rank after every listed one."""
    return COMPLEXITY_ORDER.index(name) if name in COMPLEXITY_ORDER else len(COMPLEXITY_ORDER)


def mean_and_se(values: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation, ddof = 1, over √n; 0 for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    return float(x.mean()), se


def one_se_choice(stats: dict[str, tuple[float, float]]) -> tuple[str, list[str]]:
    """The one-standard-error rule: ``stats`` maps candidate → (mean, SE), higher mean better. Returns the simplest
    (by `COMPLEXITY_ORDER`; ties by the order given) among those whose mean is at least the best mean minus the
    best candidate's SE, and that set, in the order given."""
    if not stats:
        raise ValueError("no candidates")
    names = list(stats)
    best = max(names, key=lambda n: stats[n][0])
    threshold = stats[best][0] - stats[best][1]
    within = [n for n in names if stats[n][0] >= threshold - 1e-12]
    return min(within, key=lambda n: (complexity_rank(n), names.index(n))), within


def _score_fold(router: Router, held_out: RoutingDataset, lams: list[float]) -> list[float]:
    """The fitted ``router``'s Score on ``held_out`` at each of ``lams`` (the per-fold scorer)."""
    return [float(r["score"]) for r in evaluate_router(router, held_out, lams)]


@dataclass
class AutoResult:
    """The winner (refitted on the whole training split), its training λ, the trade-offs scored, the number of
    folds, and one comparison row per candidate."""

    best: Router
    lam: float
    table: list[dict[str, Any]] = field(default_factory=list)
    tradeoffs: dict[str, float] = field(default_factory=dict)
    folds: int = DEFAULT_FOLDS

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.best.name, "lam": self.lam, "tradeoffs": self.tradeoffs, "folds": self.folds,
                "selected_on": (f"{self.folds}-fold cross-validation on the training split (grouped by prompt, "
                                "stratified by task); per fold the mean Score over the trade-offs; candidates "
                                "compared by the mean over folds ± its standard error"),
                "rule": "one standard error: the simplest candidate (complexity_order) whose mean is within one "
                        "SE of the best mean",
                "complexity_order": list(COMPLEXITY_ORDER), "candidates": self.table}


def _training_rows(train: RoutingDataset) -> RoutingDataset:
    """``train`` with every row labelled ``train`` for the folds; rows of a test split are refused."""
    test_rows = int(np.isin(train.split, ["test", "unsplit"]).sum())
    if test_rows:
        raise RouterError(f"--router auto chooses on the training split only, and the data given as training "
                          f"holds {test_rows} test rows")
    return train.with_split(np.full(len(train), "train", dtype=object))


def select_router(train: RoutingDataset, val: RoutingDataset | None = None, lam: float | str | None = None,
                  candidates: tuple[str, ...] | list[str] | None = None, seed: int = 0, folds: int = DEFAULT_FOLDS,
                  on_candidate=None, progress: bool = False) -> AutoResult:
    """Cross-validate every candidate on ``train`` (``folds`` seeded folds; ``val``, if given, only for the
    candidates' own early stopping), choose by the one-SE rule, refit the choice on all of ``train`` (with ``val``)
    and return it. The score is the mean Score at the named trade-offs of ``train``'s pool, or at ``lam`` alone (a
    number or a trade-off name) when given. ``on_candidate(name, row)`` reports each candidate's row as it is done;
    ``progress`` shows a bar over the fits."""
    from tqdm.auto import tqdm

    from radialrouter.core.objective import is_quality_only_presets, preset_name, resolve_lam, tradeoff_presets
    from radialrouter.core.training import showing_progress
    from radialrouter.data.splits import grouped_folds

    names = list(candidates) if candidates else default_candidates()
    if not names:
        raise RouterError("--router auto needs at least one candidate router")
    if len(set(names)) != len(names):
        raise RouterError(f"candidate routers named twice: {names}")
    for name in names:
        router_class(name)  # unknown names fail before any training
        if name in NOT_CANDIDATES:
            raise RouterError(f"{name!r} reads the labels of the queries it routes: it cannot be a candidate")
    rows = _training_rows(train)
    fold_rows = grouped_folds(rows, folds, seed)

    # λ values resolve with the presets every candidate computes from ``train`` (the same for all); quality-only
    # data has one trade-off, λ = 0, whatever is asked.
    presets = tradeoff_presets(train.quality, train.cost)
    if is_quality_only_presets(presets):
        fit_lam, tradeoffs = 0.0, dict(presets)
    elif lam is None:
        fit_lam, tradeoffs = presets["balance"], dict(presets)
    else:
        fit_lam = resolve_lam(lam, presets["balance"], presets)
        tradeoffs = {preset_name(fit_lam, presets) or f"λ={fit_lam:g}": fit_lam}
    lams = list(tradeoffs.values())

    def make(name: str) -> Router:
        return make_seeded(name, seed, **({"lam": fit_lam} if router_class(name).lam_at_fit else {}))

    table: list[dict[str, Any]] = []
    everything = np.arange(len(train))
    fold_fits: list[dict[str, Router]] = [{} for _ in fold_rows]  # an ensemble stacks its members' fold fits
    with tqdm(total=len(names) * folds, desc="auto: cross-validation", unit="fit", disable=not progress,
              leave=False) as bar:
        for name in names:
            start = time.perf_counter()
            scores = []  # (folds, trade-offs)
            for i, held in enumerate(fold_rows):
                bar.set_postfix_str(f"{name} fold {i + 1}/{folds}")
                fold_train = train.subset(np.setdiff1d(everything, held))
                with showing_progress(False):
                    router = fit_reusing_members(make(name), fold_fits[i], fold_train, val)
                fold_fits[i][name] = router
                scores.append(_score_fold(router, train.subset(held), lams))
                bar.update()
            scores_arr = np.asarray(scores, dtype=np.float64)
            mean, se = mean_and_se(scores_arr.mean(axis=1))
            per_tradeoff = {}
            for j, key in enumerate(tradeoffs):
                m, s = mean_and_se(scores_arr[:, j])
                per_tradeoff[key] = {"lam": lams[j], "mean": m, "se": s}
            table.append({"router": name, "cv_mean": mean, "cv_se": se,
                          "fold_scores": [float(v) for v in scores_arr.mean(axis=1)],
                          "per_tradeoff": per_tradeoff, "fit_seconds": round(time.perf_counter() - start, 2)})
            if on_candidate is not None:
                with tqdm.external_write_mode():  # the report line above the bar, not through it
                    on_candidate(name, table[-1])
    chosen, within = one_se_choice({r["router"]: (r["cv_mean"], r["cv_se"]) for r in table})
    best_mean = max(r["cv_mean"] for r in table)
    for entry in table:
        entry["best_mean"] = entry["cv_mean"] == best_mean
        entry["within_one_se"] = entry["router"] in within
        entry["chosen"] = entry["router"] == chosen
    best = make(chosen).fit(train, val)  # the choice, refitted on the whole training split
    return AutoResult(best, fit_lam, table, tradeoffs, folds)


__all__ = ["AUTO_CANDIDATES", "COMPLEXITY_ORDER", "DEFAULT_FOLDS", "AutoResult", "complexity_rank",
           "default_candidates", "mean_and_se", "one_se_choice", "select_router"]
