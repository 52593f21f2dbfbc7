"""k-nearest-neighbour baseline: a query inherits the quality and cost its most similar training queries saw."""

from __future__ import annotations

from typing import Any

import numpy as np

from radialrouter.data.dataset import RoutingDataset
from radialrouter.encoders import QueryEncoder
from radialrouter.objective import argmax_cheapest, utility
from radialrouter.routers._common import macro_score, require_embeddings
from radialrouter.routers.base import Router, RouterError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KNNRouter(Router):
    """Cosine k nearest training queries; per-LLM quality and cost are the neighbours' means (optionally weighted
    by similarity). λ-free: scores are ``q̂ − λ·COST_SCALE·ĉ``. ``k=None`` picks k from `K_GRID` by macro Perf
    at λ = 0 on the validation split (10 without one). Stores the training embeddings, so the saved model grows
    with the training set (n × d float32)."""

    name = "knn"
    partial_labels = True  # an LLM's quality is averaged over the nearest queries where it is known
    K_GRID = (5, 10, 20, 50, 100)

    def __init__(self, k: int | None = None, weighted: bool = False, chunk: int = 2048,
                 encoder: QueryEncoder | None = None) -> None:
        self.k = k
        self.weighted = weighted
        self.chunk = chunk
        self.encoder = encoder

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        if self.k is not None and self.k < 1:
            raise RouterError(f"knn: k must be ≥ 1; got {self.k}")
        self.keys_ = _unit(require_embeddings(train, self))
        known = np.isfinite(train.quality)
        self.known_ = None if known.all() else known
        self.quality_ = np.nan_to_num(train.quality.astype(np.float64))
        self.cost_ = train.cost.astype(np.float64)
        self.k_ = self.k or 10
        if self.k is None and val is not None and len(val) and np.isfinite(val.quality).all():
            xv = require_embeddings(val, self)
            perf = []
            for k in self.K_GRID:
                self.k_ = k
                perf.append(macro_score(argmax_cheapest(self._neighbour_means(xv)[0], self.mean_cost_), val, 0.0))
            self.k_ = self.K_GRID[int(np.argmax(perf))]
        self.training_ = {"k": self.k_}

    def _neighbour_means(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(quality, cost) neighbour averages, computed in chunks so memory stays O(chunk × n_train)."""
        k = min(self.k_, len(self.keys_))
        q_out, c_out = [], []
        for start in range(0, len(x), self.chunk):
            sim = _unit(x[start : start + self.chunk]) @ self.keys_.T
            idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.take_along_axis(sim, idx, axis=1).astype(np.float64) if self.weighted else np.ones(idx.shape)
            w = np.maximum(w, 1e-6)
            w /= w.sum(axis=1, keepdims=True)
            q_out.append(np.einsum("nk,nkm->nm", w, self.quality_[idx]))
            c_out.append(np.einsum("nk,nkm->nm", w, self.cost_[idx]))
        m = len(self.llms_)
        if not q_out:
            return np.zeros((0, m)), np.zeros((0, m))
        quality = np.concatenate(q_out)
        known = getattr(self, "known_", None)
        if known is not None:
            quality = self._known_neighbour_quality(x, known)
        return quality, np.concatenate(c_out)

    def _known_neighbour_quality(self, x: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Partial labels: LLM j's quality is the mean over the k nearest queries where j's quality is known (the
        mean of every known label when j has none)."""
        prior = float(self.quality_[known].mean()) if known.any() else 0.5
        xu = _unit(x)
        out = np.full((len(x), len(self.llms_)), prior)
        for j in range(len(self.llms_)):
            rows = np.flatnonzero(known[:, j])
            if not len(rows):
                continue
            k = min(self.k_, len(rows))
            for start in range(0, len(x), self.chunk):
                sim = xu[start : start + self.chunk] @ self.keys_[rows].T
                idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                w = np.take_along_axis(sim, idx, axis=1).astype(np.float64) if self.weighted else np.ones(idx.shape)
                w = np.maximum(w, 1e-6)
                out[start : start + self.chunk, j] = (w * self.quality_[rows[idx], j]).sum(1) / w.sum(1)
        return out

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        quality, cost = self._neighbour_means(x)
        return utility(quality, cost, lam)

    def _costs(self, x: np.ndarray) -> np.ndarray:
        return self._neighbour_means(x)[1]

    def _state(self) -> dict[str, np.ndarray]:
        state = {"keys": self.keys_, "quality": self.quality_, "cost": self.cost_}
        if getattr(self, "known_", None) is not None:
            state["known"] = self.known_.astype(np.uint8)
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {"k": self.k_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.keys_, self.quality_, self.cost_ = tensors["keys"], tensors["quality"], tensors["cost"]
        self.known_ = tensors["known"].astype(bool) if "known" in tensors else None
        self.k_ = int(extra["k"])
