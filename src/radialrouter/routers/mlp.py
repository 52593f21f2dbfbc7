"""MLP regressor baseline: predict every LLM's quality from the query embedding, then pick the best Score."""

from __future__ import annotations

from radialrouter.encoders import QueryEncoder
from radialrouter.routers._common import QualityRegressorRouter


class MLPRouter(QualityRegressorRouter):
    """One hidden layer from the embedding to per-LLM quality logits (sigmoid → [0, 1]), trained with soft binary
    cross-entropy; per-query cost from a ridge head on log cost. λ-free: ``q̂ − λ·COST_SCALE·ĉ`` at route time."""

    name = "mlp"

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.1,
        steps: int = 2000,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        cost_alpha: float = 1.0,
        seed: int = 0,
        encoder: QueryEncoder | None = None,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.cost_alpha = cost_alpha
        self.seed = seed
        self.encoder = encoder

    def _build(self, dim: int, n_llms: int):
        from torch import nn

        return nn.Sequential(nn.Linear(dim, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
                             nn.Linear(self.hidden, n_llms))
