"""Training on partially labelled data: rows where only some LLMs' quality is known (NaN elsewhere).

Logged traffic labels one LLM per query — the one that answered. Routers with ``partial_labels`` (``mlp``, ``mf``:
their per-LLM loss averages over the known cells only; ``knn``: an LLM's quality is the mean over the nearest
queries where it is known) train on such data directly. The others need a full quality matrix — RadialRouter's KL
target is a softmax over every LLM's Score — so `fit_partial` first fits a masked quality model (an ``mlp``) and
fills the unknown cells with its predictions (known cells keep their labels), then trains them on that.
``oracle`` cannot learn from partial labels at all (it reads each query's true labels), and a RadialRouter that
fine-tunes its encoder is refused (the imputation needs fixed query vectors).

Importance weighting is not needed for these regression losses to be consistent: which LLM was called depends on
the query only, so each per-LLM regression sees a covariate-shifted but unbiased sample of its own labels; what
exploration buys is *coverage* — labels for LLMs a greedy policy would never call (see docs/learning-from-traffic.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers import Router, RouterError, make_router

NOT_PARTIAL = ("oracle",)


def impute_quality(data: RoutingDataset, imputer: Router | None = None, seed: int = 0) -> RoutingDataset:
    """``data`` with its unknown quality cells filled by a masked quality model's predictions (clipped to [0, 1])."""
    from dataclasses import replace

    known = np.isfinite(data.quality)
    if known.all():
        return data
    if data.embeddings is None:
        raise RouterError("imputing unknown labels needs query embeddings: call data.embed(encoder) first")
    model = imputer if imputer is not None else make_router("mlp", seed=seed)
    if not model.partial_labels:
        raise RouterError(f"the imputer {model.name!r} cannot train on partial labels")
    model.fit(data)
    predicted = model._quality(data.embeddings) if hasattr(model, "_quality") else model._neighbour_means(
        data.embeddings)[0]
    return replace(data, quality=np.where(known, data.quality, np.clip(predicted, 0.0, 1.0)))


def fit_partial(router: Router, train: RoutingDataset, val: RoutingDataset | None = None,
                seed: int = 0, imputer: Router | None = None) -> Router:
    """Fit ``router`` on partially labelled ``train``: directly when it supports partial labels, otherwise on
    labels imputed by ``imputer`` (default: a masked ``mlp``; recorded in ``router.training_['partial_labels']``).
    ``val`` (model selection) is used only when fully labelled."""
    if router.name in NOT_PARTIAL:
        raise RouterError(f"{router.name!r} cannot learn from partial labels (it reads each query's true labels)")
    if val is not None and not np.isfinite(val.quality).all():
        val = None
    known = np.isfinite(train.quality)
    how: dict[str, Any] = {"known_cells": int(known.sum()), "cells": int(known.size)}
    if known.all() or router.partial_labels:
        router.fit(train, val)
        how["method"] = "masked loss" if not known.all() else "full information"
    else:
        if getattr(router, "encoder_mode", "frozen") != "frozen":
            raise RouterError(f"{router.name}: a router that fine-tunes its encoder cannot train on imputed labels")
        router.fit(impute_quality(train, imputer, seed=seed), val)
        how["method"] = "imputed by a masked mlp quality model"
    router.training_ = {**getattr(router, "training_", {}), "partial_labels": how}
    return router


__all__ = ["NOT_PARTIAL", "fit_partial", "impute_quality"]
