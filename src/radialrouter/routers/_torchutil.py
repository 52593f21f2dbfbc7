"""Small helpers the torch routers share: safetensors-friendly module state, and the validation figure (macro
Score of a router's choices) that model selection in `train_module` maximises."""

from __future__ import annotations

import numpy as np
import torch

from radialrouter.data.dataset import RoutingDataset
from radialrouter.evaluation import summarize
from radialrouter.objective import argmax_cheapest, utility


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """A module's state as NumPy arrays under ``prefix.`` (several modules can share one safetensors file)."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, tensors: dict[str, np.ndarray], prefix: str) -> torch.nn.Module:
    """Restore what `module_tensors` saved under ``prefix`` (strict: a missing or extra weight is an error)."""
    state = {k.removeprefix(f"{prefix}."): torch.from_numpy(v.copy()) for k, v in tensors.items()
             if k.startswith(f"{prefix}.")}
    module.load_state_dict(state)
    return module.eval()


def macro_score(choice: np.ndarray, data: RoutingDataset, lam: float) -> float:
    """Macro Score (Perf − λ·Cost, averaged over tasks) of one LLM index per query of ``data``."""
    rows = np.arange(len(data))
    return summarize(data.quality[rows, choice], data.cost[rows, choice], data.tasks, lam)["macro"].score


def best_llm(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """Per query, the LLM with the highest quality − λ·cost; ties go to the cheaper LLM for that query."""
    return argmax_cheapest(utility(quality, cost, lam), cost)
