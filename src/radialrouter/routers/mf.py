"""Matrix-factorisation baseline in the style of RouteLLM's MF router, for more than two LLMs."""

from __future__ import annotations

from radialrouter.core.encoders import QueryEncoder
from radialrouter.routers._common import QualityRegressorRouter


def _mf_module(dim: int, n_llms: int, rank: int):
    import torch
    from torch import nn

    class MatrixFactorisation(nn.Module):
        """logit(q, j) = w · (P q ⊙ v_j) + b_j: a projected query times a learned LLM vector, read out by w."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(dim, rank, bias=False)
            self.llm = nn.Parameter(torch.randn(n_llms, rank) / rank**0.5)
            self.readout = nn.Linear(rank, 1, bias=False)
            self.bias = nn.Parameter(torch.zeros(n_llms))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.proj(x)[:, None, :] * self.llm[None, :, :]
            return self.readout(z).squeeze(-1) + self.bias

    return MatrixFactorisation()


class MFRouter(QualityRegressorRouter):
    """RouteLLM-style matrix factorisation: score(q, j) = w·(P q ⊙ v_j) + b_j with learnable LLM vectors v_j and a
    projection P of the query embedding. RouteLLM trains it on pairwise preferences of a strong/weak pair; here it
    predicts each LLM's quality (soft binary cross-entropy), which extends it to any number of LLMs. λ-free
    scoring ``q̂ − λ·COST_SCALE·ĉ`` with a ridge head for per-query cost."""

    name = "mf"

    def __init__(
        self,
        rank: int = 128,
        steps: int = 2000,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        cost_alpha: float = 1.0,
        seed: int = 0,
        encoder: QueryEncoder | None = None,
    ) -> None:
        self.rank = rank
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.cost_alpha = cost_alpha
        self.seed = seed
        self.encoder = encoder

    def _build(self, dim: int, n_llms: int):
        return _mf_module(dim, n_llms, self.rank)
