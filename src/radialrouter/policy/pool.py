"""Change a trained router's LLM pool without retraining it: add an LLM from a few labelled probe queries, or drop one.

RadialRouter's only per-LLM parameters are the rows of its LLM-embedding matrix (one satellite per LLM, weights
shared across satellites), so a new LLM needs only a new row. `add_llm` freezes everything else, initialises the row
from the existing LLM whose quality on the probes correlates best with the newcomer's, and trains that row alone
with the router's own loss — KL between its softmax over the *whole new pool* and the target softmax of
``quality − λ·cost`` at temperature τ — on the probes. The target needs every LLM's quality on each probe (the
router's logits say how LLMs rank, not how good they are, so the old LLMs' quality cannot be recovered from them):
the probes file must carry a quality column for every LLM of the new pool. `remove_llm` drops the row.

A router supports this by providing (RadialRouter does):

* ``add_llm(name, mean_cost, init_embedding, cost_head=None)`` / ``remove_llm(name)`` — resize the pool
  (``mean_cost`` in USD per query; ``init_embedding`` a 1-D array for the new row; ``cost_head`` the new LLM's
  per-query cost predictor, fitted on the probes when the router has one);
* ``llm_embedding()`` — the ``torch.nn.Parameter`` of shape (n_llms, width), rows in ``llms_`` order;
* ``logits(x, lam)`` — differentiable (n, n_llms) logits for a float tensor of query embeddings at trade-off
  ``lam``, before the softmax;
* hyperparameters ``lam`` (the λ it was trained for), ``tau`` (the target temperature) and, for one model that
  serves every λ, ``lam_conditioned=True`` and ``lam_max`` (see `training_lams`).
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from radialrouter.core.objective import target_distribution
from radialrouter.data.dataset import DataError, RoutingDataset
from radialrouter.routers.base import MissingCellsWarning, Router, RouterError

HOOKS = ("add_llm", "remove_llm", "llm_embedding", "logits")


def _check_resizable(router: Router) -> None:
    router._check_fitted()
    missing = [h for h in HOOKS if not callable(getattr(router, h, None))]
    if missing:
        raise RouterError(
            f"the {router.name!r} router cannot change its pool in place (it lacks {', '.join(missing)}); "
            f"retrain it on the new pool instead, or use a RadialRouter"
        )


def _record(router: Router, entry: dict[str, Any]) -> None:
    """Append to ``training_["pool_changes"]`` so training.json says how the pool came to be."""
    entry = {**entry, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    router.training_ = {**getattr(router, "training_", {})}
    router.training_["pool_changes"] = [*router.training_.get("pool_changes", []), entry]


def most_similar_llm(probes: RoutingDataset, name: str, among: list[str]) -> str:
    """The LLM in ``among`` whose per-probe quality correlates best with ``name``'s (closest mean quality when
    no correlation is defined, e.g. constant columns)."""
    new = probes.quality[:, probes.llms.index(name)]
    best, best_key = among[0], (-np.inf, -np.inf)
    for llm in among:
        old = probes.quality[:, probes.llms.index(llm)]
        corr = np.corrcoef(new, old)[0, 1] if new.std() > 0 and old.std() > 0 else -np.inf
        key = (corr if np.isfinite(corr) else -np.inf, -abs(new.mean() - old.mean()))
        if key > best_key:
            best, best_key = llm, key
    return best


def add_llm(
    router: Router,
    name: str,
    probes: RoutingDataset,
    *,
    steps: int = 100,
    lr: float = 0.05,
    init: str = "similar",
    prior: float = 0.0,
    seed: int = 0,
) -> Router:
    """Add LLM ``name`` to a trained router (in place; returned for chaining) from labelled ``probes``.

    ``probes`` must hold quality and cost for ``name`` and every LLM the router already routes to (50–200 queries
    are typical). Only the new LLM's embedding row is trained (full-batch AdamW, ``steps`` steps, learning rate
    ``lr``); ``init`` is ``"similar"`` (copy the row of `most_similar_llm`), ``"mean"`` (mean of all rows) or
    ``"random"``. ``prior`` > 0 adds ``prior·‖row − init‖²``, which keeps the row near its initialisation when the
    probes are few. The new LLM's mean cost (tie-breaking, λ features) is its mean on the probes; its per-query
    cost predictor, where the router has one, is a ridge fit on the probes.
    """
    import torch

    from radialrouter.core.training import set_seed, train_module

    _check_resizable(router)
    if name in router.llms_:
        raise RouterError(f"{name!r} is already in the pool {router.llms_}")
    pool = [*router.llms_, name]
    missing = [llm for llm in pool if llm not in probes.llms]
    if missing:
        raise DataError(
            f"the probes lack quality for {missing}; they need a quality (and cost) column for every LLM of the new "
            f"pool {pool}, because the training target compares the new LLM with the existing ones on each probe"
        )
    if len(probes) == 0:
        raise DataError("no probe queries")
    if not probes.has_cost:
        raise DataError("the probes have no cost columns: the new LLM's cost is needed for its routing target")
    if init not in {"similar", "mean", "random"}:
        raise ValueError(f"init must be 'similar', 'mean' or 'random'; got {init!r}")
    probes = probes.select_llms(pool)
    if probes.has_missing:
        complete = probes.complete_rows
        if not complete.any():
            raise DataError(f"no probe has the quality of every LLM of the new pool {pool}: the training target "
                            "compares the new LLM with the existing ones on each probe")
        warnings.warn(f"add_llm: {int((~complete).sum())} of {len(probes)} probes miss some LLM's quality; trained on "
                      f"the {int(complete.sum())} complete ones", MissingCellsWarning, stacklevel=2)
        probes = probes.subset(complete)
    start = time.perf_counter()
    set_seed(seed)
    x = torch.from_numpy(np.asarray(router._inputs(probes), dtype=np.float32))
    with torch.no_grad():
        rows = router.llm_embedding().detach().clone()
    init_from = most_similar_llm(probes, name, router.llms_) if init == "similar" else init
    if init == "similar":
        init_row = rows[router.llms_.index(init_from)]
    elif init == "mean":
        init_row = rows.mean(dim=0)
    else:
        init_row = torch.randn(rows.shape[1]) * rows.std()
    extra = {}
    if getattr(router, "cost_w_", None) is not None:  # a per-query cost predictor: fit the new LLM's column
        from radialrouter.routers._common import fit_cost_head

        w, b = fit_cost_head(x.numpy(), probes.cost[:, -1:])
        extra["cost_head"] = (w[:, 0], float(b[0]))
    router.add_llm(name, float(probes.cost[:, -1].mean()), init_row.numpy().copy(), **extra)

    emb = router.llm_embedding()
    new = len(pool) - 1
    mask = torch.zeros_like(emb)
    mask[new] = 1.0
    frozen = [p for p in _parameters(router) if p is not emb]
    was = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    emb.requires_grad_(True)
    hook = emb.register_hook(lambda g: g * mask)
    # Each training item is one (probe, λ) pair; a step takes a batch of len(probes) items across the λ values.
    lams = training_lams(router)
    tau = router.target_tau() if hasattr(router, "target_tau") else float(router.tau)  # "auto": the one chosen
    targets = torch.from_numpy(np.concatenate(
        [target_distribution(probes.quality, probes.cost, lam, tau) for lam in lams]).astype(np.float32))
    n = len(probes)
    anchor = init_row.detach().clone()
    module = _module(router)
    module.eval()  # the frozen backbone routes without dropout; fit the new row to the features it will see

    def loss_fn(items: np.ndarray) -> torch.Tensor:
        kl = x.sum() * 0.0
        for k, lam in enumerate(lams):
            sel = items[items // n == k]
            if len(sel):
                p = targets[sel]
                logp = torch.log_softmax(router.logits(x[sel % n], lam), dim=-1)
                kl = kl + (p * (torch.log(p.clamp_min(1e-12)) - logp)).sum() / len(items)
        return kl + prior * ((emb[new] - anchor) ** 2).sum() if prior > 0 else kl

    try:
        train_module(torch.nn.ParameterList([emb]), loss_fn, n * len(lams), steps=steps, batch_size=n, lr=lr,
                     weight_decay=0.0, seed=seed, val_fn=None, patience=None, progress=False,
                     desc=f"adding {name}", parameters=[emb])
    finally:
        hook.remove()
        for p, flag in zip(frozen, was):
            p.requires_grad_(flag)
    _record(router, {"op": "add", "llm": name, "n_probes": len(probes), "steps": steps, "lr": lr, "init": init,
                     "init_from": init_from, "prior": prior, "seconds": round(time.perf_counter() - start, 3)})
    return router


def training_lams(router: Router) -> list[float]:
    """λ values the new LLM's KL target is built at: the router's own λ for a per-scenario model; for a
    λ-conditioned one (one model for every λ), the three scenarios plus a log-spaced spread up to ``lam_max``,
    averaged, so the new satellite is right across the range the router serves."""
    if not getattr(router, "lam_conditioned", False):
        return [float(router.lam)]
    spread = np.geomspace(1e-3, max(float(getattr(router, "lam_max", 1.0)), 2e-3), 5)
    return sorted({0.0, 0.02, 0.1, *np.round(spread, 6).tolist()})


def remove_llm(router: Router, name: str) -> Router:
    """Drop LLM ``name`` from a trained router (in place): its embedding row goes, nothing else changes."""
    _check_resizable(router)
    if name not in router.llms_:
        raise RouterError(f"{name!r} is not in the pool {router.llms_}")
    if len(router.llms_) == 1:
        raise RouterError(f"cannot remove {name!r}: it is the only LLM in the pool")
    router.remove_llm(name)
    _record(router, {"op": "remove", "llm": name})
    return router


def save_pool_change(router: Router, source: str | Path, target: str | Path) -> str | None:
    """Save a router whose pool `add_llm` or `remove_llm` changed, read from directory ``source``, to ``target``
    (the same directory or another one); returns what happened to its calibration, for the user, or None.

    A default λ calibrated for the old pool (``calibration.json``, `radialrouter.policy.calibration`) meets its
    budget on that pool only: the spend at a λ changes when an LLM comes or goes. So the default goes back to the
    router's trained one (`Router.trained_default_lam`) instead of being silently kept, and the record moves to
    ``history`` in ``target`` (kept, marked retired), so the new model never claims a calibration it does not have.
    """
    from radialrouter.policy.calibration import current_calibration, retire_calibration

    calibration = current_calibration(source)
    change = (getattr(router, "training_", {}).get("pool_changes") or [{}])[-1]
    reason = f"pool changed: {change.get('op', 'changed')} {change.get('llm', '')}".rstrip()
    note = None
    if calibration is not None:
        old, new = router.default_lam_, router.trained_default_lam()
        if np.isclose(old, float(calibration["lam"]), rtol=1e-9, atol=0.0):
            router.default_lam_ = new
            change["default_lam_reset"] = {"from": old, "to": new, "calibration_target": calibration.get("target")}
            note = (f"default λ reset from {old:.6g} (calibrated on the old pool, target {calibration.get('target')}) "
                    f"to {new:.6g}, the router's trained default")
        else:
            note = f"the calibration record (λ = {float(calibration['lam']):.6g}, not the default λ {old:.6g})"
        note += (f"; the calibration was for the old pool, so it is kept under history in calibration.json: run "
                 f"`radialrouter calibrate --model {target} ...` on your queries to calibrate the new pool")
    router.save_pretrained(target)
    if retire_calibration(source, target, reason) is None and Path(target).resolve() != Path(source).resolve():
        (Path(target) / "calibration.json").unlink(missing_ok=True)  # a record of the model that was overwritten
    return note


def clone(router: Router) -> Router:
    """An independent copy of a fitted router to grow or shrink, sharing its query encoder (a loaded model and an
    on-disk cache, which cannot be copied and never change)."""
    import copy

    encoder = getattr(router, "encoder", None)
    return copy.deepcopy(router, memo={} if encoder is None else {id(encoder): encoder})


def _module(router: Router):
    """The torch module that owns the LLM embedding (``train_module`` switches it between train and eval)."""
    import torch

    for value in vars(router).values():
        if isinstance(value, torch.nn.Module) and any(p is router.llm_embedding() for p in value.parameters()):
            return value
    raise RouterError(f"{router.name!r}: no torch module attribute owns llm_embedding()")


def _parameters(router: Router) -> list:
    return list(_module(router).parameters())
