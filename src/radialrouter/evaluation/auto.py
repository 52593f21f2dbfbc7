"""``radialrouter train --router auto``: train several routers on the user's data and keep the one that does best
on the validation split at the user's trade-off.

No router wins everywhere (see the benchmark reports: MLP, kNN and RadialRouter trade places per data set), so a
user who does not want to read those tables gets the comparison run on their own data. Selection uses validation
only — the test split stays untouched for the figures printed afterwards. Candidates trained for one λ
(``lam_at_fit``) are trained at the user's λ. The winner is saved with the comparison table (``training.json`` →
``auto``), so the choice can be audited later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radialrouter.data.dataset import RoutingDataset
from radialrouter.evaluation.bench import make_seeded
from radialrouter.evaluation.metrics import DEFAULT_SWEEP, aiq, evaluate_router
from radialrouter.routers import router_class
from radialrouter.routers.base import Router, RouterError

#: Tried by default: the routers that led the benchmark tables on at least one shared data set.
AUTO_CANDIDATES: tuple[str, ...] = ("radial", "mlp", "knn", "equi")


@dataclass
class AutoResult:
    """The winner (fitted), the λ it was chosen at, and one comparison row per candidate."""

    best: Router
    lam: float
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.best.name, "lam": self.lam, "selected_on": "validation Score at lam (ties: AIQ)",
                "candidates": self.table}


def select_router(train: RoutingDataset, val: RoutingDataset, lam: float | str | None = "balance",
                  candidates: tuple[str, ...] | list[str] = AUTO_CANDIDATES, seed: int = 0,
                  on_candidate=None) -> AutoResult:
    """Fit every candidate on ``train`` (``val`` for their own early stopping), score each on ``val`` at ``lam``
    (a number or a trade-off name, resolved on ``train``'s price scale) and return the best, by validation Score,
    AIQ over the λ sweep breaking ties. ``on_candidate(name, row)`` reports progress."""
    if val is None or len(val) == 0:
        raise RouterError("--router auto needs a validation split to choose on")
    if not candidates:
        raise RouterError("--router auto needs at least one candidate router")
    for name in candidates:
        router_class(name)  # unknown names fail before any training
    from radialrouter.core.objective import is_quality_only_presets, resolve_lam, tradeoff_presets

    # Names resolve with the presets every candidate computes from ``train`` (the same for all); quality-only
    # data has one trade-off, λ = 0, whatever is asked.
    presets = tradeoff_presets(train.quality, train.cost)
    quality_only = is_quality_only_presets(presets)
    chosen_lam = 0.0 if quality_only else resolve_lam(lam, presets["balance"], presets)
    fitted: dict[str, Router] = {}
    sweeps: dict[str, list[dict]] = {}
    table: list[dict[str, Any]] = []
    for name in candidates:
        cls = router_class(name)
        start = time.perf_counter()
        router = make_seeded(name, seed, **({"lam": chosen_lam} if cls.lam_at_fit else {})).fit(train, val)
        row = evaluate_router(router, val, [chosen_lam])[0]
        sweeps[name] = ([row] if cls.lam_at_fit or not val.has_cost or quality_only
                        else evaluate_router(router, val, DEFAULT_SWEEP))
        table.append({"router": name, "val_score": row["score"], "val_perf": row["perf"], "val_cost": row["cost"],
                      "fit_seconds": round(time.perf_counter() - start, 2)})
        fitted[name] = router
        if on_candidate is not None:
            on_candidate(name, table[-1])
    costs = [r["cost"] for rows in sweeps.values() for r in rows]
    for entry in table:  # AIQ over the cost range shared by all candidates, so the figures compare
        rows = sweeps[entry["router"]]
        entry["val_aiq"] = (aiq([r["cost"] for r in rows], [r["perf"] for r in rows], (min(costs), max(costs)))
                            if len(rows) > 1 and max(costs) > min(costs) else None)
    best = max(table, key=lambda r: (round(r["val_score"], 9), -np.inf if r["val_aiq"] is None else r["val_aiq"]))
    for entry in table:
        entry["chosen"] = entry is best
    return AutoResult(fitted[best["router"]], chosen_lam, table)


__all__ = ["AUTO_CANDIDATES", "AutoResult", "select_router"]
