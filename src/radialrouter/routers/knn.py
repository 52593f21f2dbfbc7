"""k-nearest-neighbour baseline: a query inherits the quality and cost its most similar training queries saw."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import argmax_cheapest, utility
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import macro_score, require_embeddings
from radialrouter.routers.base import Router, RouterError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KNNRouter(Router):
    """Cosine k nearest training queries; per-LLM quality and cost are the neighbours' means (optionally weighted
    by similarity). λ-free: scores are ``q̂ − λ·COST_SCALE·ĉ``. ``k=None`` picks k from `K_GRID` by macro Perf
    at λ = 0 on the validation split (10 without one). Stores the training embeddings, so the saved model grows
    with the training set (n × d float32).

    Partial labels (NaN cells, e.g. logged traffic with one label per query) — options that matter only there:

    * ``neighbours="per-llm"`` (default): LLM j's quality is the mean over the k nearest queries where j's label is
      known. ``"shared"``: the k nearest queries are found once, among all training queries, and LLM j's quality
      is the mean of its known labels among them — a rarely called LLM then borrows the neighbourhood of the
      query rather than reaching out to far-away queries where it happened to be called.
    * ``shrinkage`` s ≥ 0: the neighbour mean over n labels is shrunk toward LLM j's mean over all its known labels
      with s pseudo-labels, (n·mean + s·μ_j) / (n + s) (empirical Bayes; with ``"shared"`` and no label of j in
      the neighbourhood the estimate is μ_j).
    * ``pessimism`` p ≥ 0: routing lowers that estimate by p standard errors, sqrt(q̂(1 − q̂) / (n + s)), as the
      ``mlp``'s ``pessimism`` does: an argmax over noisy estimates picks whichever LLM had lucky labels.

    With the defaults (``"per-llm"``, 0, 0) it is the plain masked k-nearest-neighbour mean."""

    name = "knn"
    partial_labels = True  # an LLM's quality is averaged over the nearest queries where it is known
    K_GRID = (5, 10, 20, 50, 100)

    NEIGHBOURS = ("per-llm", "shared")

    def __init__(self, k: int | None = None, weighted: bool = False, chunk: int = 2048,
                 encoder: QueryEncoder | None = None, neighbours: str = "per-llm", shrinkage: float = 0.0,
                 pessimism: float = 0.0) -> None:
        self.k = k
        self.weighted = weighted
        self.chunk = chunk
        self.encoder = encoder
        self.neighbours = neighbours
        self.shrinkage = shrinkage
        self.pessimism = pessimism

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        if self.k is not None and self.k < 1:
            raise RouterError(f"knn: k must be ≥ 1; got {self.k}")
        if self.neighbours not in self.NEIGHBOURS:
            raise RouterError(f"knn: neighbours must be one of {self.NEIGHBOURS}; got {self.neighbours!r}")
        if not (self.shrinkage >= 0 and self.pessimism >= 0):
            raise RouterError(f"knn: shrinkage and pessimism must be ≥ 0; got {self.shrinkage}, {self.pessimism}")
        self._last_stats = None
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
        quality, cost, _ = self._neighbour_stats(x)
        return quality, cost

    def _neighbour_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(quality, cost, labels behind each quality estimate — None with full information). The neighbours do
        not depend on λ, so the last input's are kept: a λ sweep over the same queries (evaluation, calibration)
        finds them once — with missing cells that is one nearest-neighbour search per LLM."""
        x = np.ascontiguousarray(x)
        key = (self.k_, self.weighted, getattr(self, "neighbours", "per-llm"), getattr(self, "shrinkage", 0.0), x.shape,
               x.dtype.str, hashlib.blake2b(x.view(np.uint8), digest_size=16).digest())
        last = getattr(self, "_last_stats", None)
        if last is not None and last[0] == key:
            return last[1]
        stats = self._compute_neighbour_stats(x)
        self._last_stats = (key, stats)
        return stats

    def _compute_neighbour_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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
            return np.zeros((0, m)), np.zeros((0, m)), None
        quality, labels = np.concatenate(q_out), None
        known = getattr(self, "known_", None)
        if known is not None:
            quality, labels = self._known_neighbour_quality(x, known)
        return quality, np.concatenate(c_out), labels

    def _known_neighbour_quality(self, x: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Partial labels: (quality, labels behind it) per query and LLM — the neighbour mean of LLM j's known
        labels (``neighbours``), shrunk toward j's mean over all its labels (``shrinkage``); an LLM with no label
        at all gets the mean of every known label. The count is the number of neighbour labels plus the
        pseudo-labels (0 for an LLM with no label)."""
        prior = float(self.quality_[known].mean()) if known.any() else 0.5
        m = len(self.llms_)
        counts_all = known.sum(0)
        llm_mean = np.where(counts_all > 0, (self.quality_ * known).sum(0) / np.maximum(counts_all, 1), prior)
        s = float(getattr(self, "shrinkage", 0.0))
        xu = _unit(x)
        total = np.zeros((len(x), m))  # Σ w·q over the neighbour labels
        weight = np.zeros((len(x), m))  # Σ w
        n = np.zeros((len(x), m))  # how many labels
        if getattr(self, "neighbours", "per-llm") == "shared":
            k = min(self.k_, len(self.keys_))
            for start in range(0, len(x), self.chunk):
                sl = slice(start, start + self.chunk)
                sim = xu[sl] @ self.keys_.T
                idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                w = np.take_along_axis(sim, idx, axis=1).astype(np.float64) if self.weighted else np.ones(idx.shape)
                w = np.maximum(w, 1e-6)[:, :, None] * known[idx]  # (chunk, k, m): only known cells count
                total[sl] = (w * self.quality_[idx]).sum(1)
                weight[sl] = w.sum(1)
                n[sl] = known[idx].sum(1)
        else:
            for j in range(m):
                rows = np.flatnonzero(known[:, j])
                if not len(rows):
                    continue
                k = min(self.k_, len(rows))
                for start in range(0, len(x), self.chunk):
                    sl = slice(start, start + self.chunk)
                    sim = xu[sl] @ self.keys_[rows].T
                    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                    w = np.take_along_axis(sim, idx, axis=1).astype(np.float64) if self.weighted \
                        else np.ones(idx.shape)
                    w = np.maximum(w, 1e-6)
                    total[sl, j], weight[sl, j], n[sl, j] = (w * self.quality_[rows[idx], j]).sum(1), w.sum(1), k
        mean = np.divide(total, weight, out=np.tile(llm_mean, (len(x), 1)), where=weight > 0)
        quality = (n * mean + s * llm_mean) / np.maximum(n + s, 1e-12) if s > 0 else mean
        return quality, np.where(counts_all > 0, n + s, 0.0)

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        quality, cost, labels = self._neighbour_stats(x)
        p = float(getattr(self, "pessimism", 0.0))
        if labels is not None and p > 0:  # partial labels: route on a lower confidence bound
            quality = quality - p * np.sqrt(np.clip(quality * (1 - quality), 0, None) / np.maximum(labels, 1.0))
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
        self._last_stats = None
        self.keys_, self.quality_, self.cost_ = tensors["keys"], tensors["quality"], tensors["cost"]
        self.known_ = tensors["known"].astype(bool) if "known" in tensors else None
        self.k_ = int(extra["k"])
