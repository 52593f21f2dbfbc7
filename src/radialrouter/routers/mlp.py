"""MLP regressor baseline: predict every LLM's quality from the query embedding, then pick the best Score."""

from __future__ import annotations

from radialrouter.core.encoders import QueryEncoder
from radialrouter.routers._common import QualityRegressorRouter


class MLPRouter(QualityRegressorRouter):
    """One hidden layer from the embedding to per-LLM quality logits (sigmoid → [0, 1]), trained with soft binary
    cross-entropy; per-query cost from a ridge head on log cost. λ-free: ``q̂ − λ·COST_SCALE·ĉ`` at route time.

    ``ensemble`` > 1 trains that many such networks side by side (different initialisations and dropout masks,
    each with its own loss on the same batches) and predicts with the mean of their logits: a deep ensemble, whose
    lower variance matters when the labels are few (routing takes an argmax over noisy estimates).

    ``epochs`` (None: off) caps training at that many passes over the rows, ``min(steps, ceil(epochs · n /
    batch_size))``: a router refitted on a growing log of traffic trains its first few hundred rows for fewer
    steps than the thousands it is tuned for, rather than over-fitting them."""

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
        ensemble: int = 1,
        epochs: float | None = None,
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
        self.ensemble = ensemble
        self.epochs = epochs

    def _build(self, dim: int, n_llms: int):
        from torch import nn

        def net() -> nn.Module:
            return nn.Sequential(nn.Linear(dim, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
                                 nn.Linear(self.hidden, n_llms))

        n = int(getattr(self, "ensemble", 1))
        if n < 1:
            from radialrouter.routers.base import RouterError

            raise RouterError(f"mlp: ensemble must be ≥ 1; got {n}")
        return net() if n == 1 else _Ensemble([net() for _ in range(n)])


def _Ensemble(members):  # noqa: N802 - builds a torch module; torch is imported lazily
    import torch
    from torch import nn

    class Ensemble(nn.Module):
        """Members side by side: in training mode the stacked logits (members, n, m), each member's loss counted
        (see `QualityRegressorRouter`); in eval mode the mean logit (n, m)."""

        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.stack([m(x) for m in self.members])
            return out if self.training else out.mean(0)

    return Ensemble()
