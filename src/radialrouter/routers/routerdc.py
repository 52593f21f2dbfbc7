"""RouterDC baseline (Chen et al., NeurIPS 2024): dual contrastive learning of a query projection and LLM
embeddings. Here the encoder is frozen (cached vectors), so a small MLP projection is what learns."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.objective import utility
from radialrouter.core.training import set_seed, train_module
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import macro_score, require_embeddings
from radialrouter.routers._torchutil import load_module_tensors, module_tensors
from radialrouter.routers.base import Router


class DCNet(nn.Module):
    """MLP projection of the query and one learnable vector per LLM; ``similarity`` is cosine / temperature."""

    def __init__(self, in_dim: int, n_llms: int, hidden: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.llm = nn.Parameter(torch.randn(n_llms, dim) / dim**0.5)
        self.temperature = temperature

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(x), dim=-1)

    def similarity(self, q: torch.Tensor) -> torch.Tensor:
        return q @ nn.functional.normalize(self.llm, dim=-1).T / self.temperature


def sample_llm_loss(sim: torch.Tensor, score: torch.Tensor, cost: torch.Tensor, k: int) -> torch.Tensor:
    """RouterDC's sample–LLM contrastive loss: each of the top-``k`` LLMs by score (when its score is > 0) against
    the bottom-``k`` LLMs, −log e^{s+} / (e^{s+} + Σ e^{s−}). Equal scores rank the cheaper LLM higher; a bottom-k
    LLM scoring as well as the positive is not used as its negative (the contrast would be meaningless)."""
    # Rank by score, then cheaper first: a tiny cost-based nudge below any real score difference.
    key = score - 1e-6 * cost / (cost.max() + 1e-12)
    top = key.topk(k, dim=1).indices  # (b, k)
    bottom = (-key).topk(k, dim=1).indices  # (b, k)
    s_pos, y_pos = sim.gather(1, top), score.gather(1, top)
    s_neg, y_neg = sim.gather(1, bottom), score.gather(1, bottom)
    valid_neg = y_neg[:, None, :] < y_pos[:, :, None]  # (b, k_pos, k_neg)
    neg = torch.where(valid_neg, s_neg[:, None, :], torch.full_like(valid_neg, -torch.inf, dtype=sim.dtype))
    logits = torch.cat([s_pos[:, :, None], neg], dim=2)  # positive at index 0
    use = (y_pos > 0) & valid_neg.any(dim=2)
    if not use.any():
        return sim.sum() * 0.0
    nll = torch.logsumexp(logits, dim=2) - s_pos
    return nll[use].mean()


def cluster_loss(q: torch.Tensor, cluster: torch.Tensor, n_negatives: int, temperature: float) -> torch.Tensor:
    """RouterDC's sample–sample loss: for each query a random in-batch positive from its k-means cluster and
    ``n_negatives`` random in-batch queries from other clusters, InfoNCE on cosine similarity."""
    b = len(q)
    same = (cluster[:, None] == cluster[None, :]) & ~torch.eye(b, dtype=torch.bool)
    other = cluster[:, None] != cluster[None, :]
    use = same.any(dim=1) & (other.sum(dim=1) >= n_negatives)
    if not use.any():
        return q.sum() * 0.0
    pos = torch.where(same, torch.rand(b, b), -1.0).argmax(dim=1)
    neg = torch.where(other, torch.rand(b, b), -1.0).topk(n_negatives, dim=1).indices
    sim = q @ q.T / temperature
    logits = torch.cat([sim.gather(1, pos[:, None]), sim.gather(1, neg)], dim=1)
    target = torch.zeros(b, dtype=torch.long)
    return nn.functional.cross_entropy(logits[use], target[use])


class RouterDCRouter(Router):
    """Scores are the query–LLM similarities, trained for one λ: the ranking score of an LLM on a training query
    is quality − λ·cost (cost per 1,000 queries). ``top_k`` defaults to RouterDC's 4 of 11 LLMs, scaled to the
    pool (round(4·m/11), at least 1); clusters: k-means with ``n_clusters`` on the training embeddings."""

    name = "routerdc"
    lam_at_fit = True

    def __init__(
        self,
        lam: float = 0.0,
        hidden: int = 256,
        dim: int = 128,
        temperature: float = 0.1,
        top_k: int | None = None,
        n_clusters: int = 8,
        n_negatives: int = 3,
        cluster_temperature: float = 0.1,
        alpha: float = 1.0,
        steps: int = 1000,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        encoder: QueryEncoder | None = None,
    ) -> None:
        self.lam = lam
        self.hidden = hidden
        self.dim = dim
        self.temperature = temperature
        self.top_k = top_k
        self.n_clusters = n_clusters
        self.n_negatives = n_negatives
        self.cluster_temperature = cluster_temperature
        self.alpha = alpha
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.encoder = encoder

    def _build(self, in_dim: int) -> DCNet:
        return DCNet(in_dim, len(self.llms_), self.hidden, self.dim, self.temperature)

    def _k(self) -> int:
        m = len(self.llms_)
        k = self.top_k if self.top_k is not None else max(1, round(4 * m / 11))
        if not 1 <= k <= m:
            raise ValueError(f"top_k must be between 1 and the pool size {m}; got {k}")
        return k

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        from sklearn.cluster import KMeans

        emb = require_embeddings(train, self)
        set_seed(self.seed)
        self.in_dim_ = emb.shape[1]
        self.net_ = self._build(self.in_dim_)
        k = self._k()
        n_clusters = min(self.n_clusters, len(train))
        clusters = KMeans(n_clusters=n_clusters, n_init=4, random_state=self.seed).fit_predict(emb)
        x = torch.from_numpy(emb)
        score = torch.from_numpy(utility(train.quality, train.cost, self.lam).astype(np.float32))
        cost = torch.from_numpy(train.cost.astype(np.float32))
        cluster = torch.from_numpy(clusters.astype(np.int64))

        def loss_fn(idx: np.ndarray) -> torch.Tensor:
            q = self.net_.embed(x[idx])
            loss = sample_llm_loss(self.net_.similarity(q), score[idx], cost[idx], k)
            if self.alpha > 0:
                loss = loss + self.alpha * cluster_loss(q, cluster[idx], self.n_negatives, self.cluster_temperature)
            return loss

        val_fn = None
        if val is not None and len(val):
            xv = require_embeddings(val, self)

            def val_fn() -> float:
                return macro_score(self.predict(xv), val, self.lam)

        result = train_module(self.net_, loss_fn, len(train), steps=self.steps, batch_size=self.batch_size,
                              lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, val_fn=val_fn,
                              progress=False, desc=self.name)
        self.training_ = {"steps": result.steps, "best_step": result.best_step, "best_val_score": result.best_val,
                          "top_k": k, "n_clusters": n_clusters}

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        # Trained for ``self.lam``; another λ gets the same model (train one router per scenario).
        with torch.no_grad():
            q = self.net_.eval().embed(torch.from_numpy(np.asarray(x, dtype=np.float32)))
            return self.net_.similarity(q).double().numpy()

    def _state(self) -> dict[str, np.ndarray]:
        return module_tensors(self.net_, "net")

    def _extra_state(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.in_dim_ = int(extra["in_dim"])
        self.net_ = load_module_tensors(self._build(self.in_dim_), tensors, "net")
