"""CosineClassifier baseline (RadialRouter's Table 1): classify each query into the LLM that is best under the
scenario, with logits = cosine(projected query, learnable LLM embedding) / T."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from radialrouter.core.encoders import QueryEncoder
from radialrouter.core.training import set_seed, train_module
from radialrouter.data.dataset import RoutingDataset
from radialrouter.routers._common import best_llm, macro_score, require_embeddings
from radialrouter.routers._torchutil import load_module_tensors, module_tensors
from radialrouter.routers.base import Router


class CosineNet(nn.Module):
    """A linear projection of the frozen query vector, one learnable vector per LLM, cosine logits."""

    def __init__(self, in_dim: int, n_llms: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.llm = nn.Parameter(torch.randn(n_llms, dim) / dim**0.5)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = nn.functional.normalize(self.proj(x), dim=-1)
        k = nn.functional.normalize(self.llm, dim=-1)
        return q @ k.T / self.temperature


class CosineClassifierRouter(Router):
    """Cross-entropy on the single best LLM per query at the scenario's λ (argmax of quality − λ·cost, ties to
    the cheaper LLM), so one model serves one λ. At λ = 0 the label of a query every LLM fails (or several LLMs
    solve) is the cheapest such LLM: the hard label is why this baseline trails the regressors in the paper."""

    name = "cosine"
    lam_at_fit = True
    missing_cells = "masked"  # target: the best observed LLM; the softmax runs over the observed LLMs

    def __init__(
        self,
        lam: float = 0.0,
        dim: int = 128,
        temperature: float = 0.1,
        steps: int = 1000,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        encoder: QueryEncoder | None = None,
    ) -> None:
        self.lam = lam
        self.dim = dim
        self.temperature = temperature
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.encoder = encoder

    def _build(self, in_dim: int) -> CosineNet:
        return CosineNet(in_dim, len(self.llms_), self.dim, self.temperature)

    def _fit(self, train: RoutingDataset, val: RoutingDataset | None) -> None:
        x = torch.from_numpy(require_embeddings(train, self))
        set_seed(self.seed)
        self.in_dim_ = x.shape[1]
        self.net_ = self._build(self.in_dim_)
        target = torch.from_numpy(best_llm(train.quality, train.cost, self.lam))  # best among observed LLMs
        observed = torch.from_numpy(np.isfinite(train.quality))
        missing = not bool(observed.all())

        def loss_fn(idx: np.ndarray) -> torch.Tensor:
            logits = self.net_(x[idx])
            if missing:  # the classes of a query are its observed LLMs (as `route(candidates=...)` masks them)
                logits = logits.masked_fill(~observed[idx], -1e4)
            return nn.functional.cross_entropy(logits, target[idx])

        val_fn = None
        if val is not None and len(val):
            xv = require_embeddings(val, self)

            def val_fn() -> float:
                return macro_score(self.predict(xv), val, self.lam)

        result = train_module(self.net_, loss_fn, len(train), steps=self.steps, batch_size=self.batch_size,
                              lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, val_fn=val_fn,
                              progress=False, desc=self.name)
        self.training_ = {"steps": result.steps, "best_step": result.best_step, "best_val_score": result.best_val}

    def _logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net_.eval()(torch.from_numpy(np.asarray(x, dtype=np.float32))).double().numpy()

    def _scores(self, x: np.ndarray, lam: float) -> np.ndarray:
        # Trained for ``self.lam``; another λ gets the same model (train one router per scenario).
        return self._logits(x)

    def _proba(self, x: np.ndarray, lam: float) -> np.ndarray:
        z = self._logits(x)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _state(self) -> dict[str, np.ndarray]:
        return module_tensors(self.net_, "net")

    def _extra_state(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim_}

    def _load_state(self, tensors: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.in_dim_ = int(extra["in_dim"])
        self.net_ = load_module_tensors(self._build(self.in_dim_), tensors, "net")
